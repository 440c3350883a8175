"""The benchmark suite: one module per benchmark, run as ``python -m bench.run``
from the repository root (``./scripts/bench.sh`` sets up, then does that);
bench.run's docstring says how a benchmark module is written."""
