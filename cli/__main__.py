"""`python -m rpctl.cli ...` is `rpctl ...`: the one entry point, for tests and
benchmarks that run the command from a virtualenv's python."""

from .main import main

main()
