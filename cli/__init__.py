"""rpctl's command line: `rpctl` (cli/main.py), one module per command group (*_cmd.py), and
the pure pieces they draw with.  `python -m rpctl.cli` is `rpctl`."""
