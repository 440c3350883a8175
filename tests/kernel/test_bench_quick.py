"""The benchmark suite still runs: `bench/run.py --quick` runs every benchmark
once at small sizes (under a minute; its figures are not checked) and leaves
the published figures in docs/benchmarks.md alone."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "benchmarks.md"


def test_quick_suite_runs_every_benchmark(netns):
    before = DOC.read_bytes() if DOC.exists() else None
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--quick"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    started = re.findall(r"^== (\w+)$", proc.stdout, re.M)
    done = re.findall(r"^== (\w+): done", proc.stdout, re.M)
    assert {"controlplane", "quality"} <= set(started)
    assert done == started, proc.stdout + proc.stderr
    assert (DOC.read_bytes() if DOC.exists() else None) == before
