"""The benchmark suite still runs: `python -m bench.run --quick` (from the
repository root, as scripts/bench.sh runs it) runs every benchmark once at
small sizes (under a minute; its figures are not checked), draws the PNG
figures to a scratch directory, and leaves the published figures in docs/
alone."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "benchmarks.md"


def published() -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in [DOC, *DOC.parent.glob("bench-*.png")] if p.exists()}


def test_quick_suite_runs_every_benchmark(netns):
    before = published()
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick"],
        # About 70 s on a quiet machine (the rolling restart's wrk rounds and
        # the adaptive benchmark's stalls are most of it); 110 s was seen
        # before with the two CPUs shared by other busy work.
        cwd=REPO, capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    started = re.findall(r"^== (\w+)$", proc.stdout, re.M)
    done = re.findall(r"^== (\w+): done", proc.stdout, re.M)
    assert {"controlplane", "quality"} <= set(started)
    assert done == started, proc.stdout + proc.stderr
    drawn = re.findall(r"^figure: (.*)$", proc.stdout, re.M)
    assert {Path(p).name for p in drawn} == {
        "bench-datapath.png", "bench-endtoend.png", "bench-controlplane.png", "bench-adaptive.png", "bench-scale.png",
        "bench-deploy.png"}
    assert all(Path(p).parent != DOC.parent for p in drawn), "quick figures went over the published ones"
    assert published() == before
