"""Helpers shared by the tests (tests/unit, tests/kernel) and the benchmarks
(bench/): fresh network namespaces (netns), member sockets and real traffic
(traffic), a real nginx on a SO_REUSEPORT port (nginx), a synthetic RSS device
(rss_device), and `rpctl run` launched as a subprocess with waits on its
workers (launched); for the unit tests, hand-built group views (views) and
endpoints as discover finds them (endpoints), a renderable as a terminal
shows it (terminal), bpf/'s C read as text (bpf_source), the library's error
classes (errors), rpctl run in-process (cli) and metric families read back
(metrics).  Plain modules,
no pytest, imported as
``tests.support.<module>`` from the repository root (pytest's ``pythonpath``
setting in pyproject.toml; ``python -m bench.run`` runs from there too)."""
