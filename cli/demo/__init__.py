"""The demo: demo workers (worker), a load generator (loadgen) and the steps `rpctl demo` runs (runner).

None of it is part of the operator's commands; tests and benchmarks use the
worker and the load generator as real servers and clients.
"""
