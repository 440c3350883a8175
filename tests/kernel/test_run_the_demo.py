"""The README's demo, as a user without a terminal runs it."""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.kernel


def test_demo_runs_four_steps_and_exits_by_itself(netns, rpctl):
    proc = rpctl.subprocess("demo", "--port", 18080, "--step-seconds", 1)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    for title in ("even weights", "drain worker-3", "weights worker-1=3 worker-2=1", "undrain worker-3"):
        assert title in out
    assert "done: no connection failed" in out
    # In the drain step worker-3 got no reply at all.
    drain_step = out.split("drain worker-3:")[1].split("weights worker-1=3")[0]
    row = next(line for line in drain_step.splitlines() if "worker-3" in line)
    assert re.search(r"\b0\.0%.*\b0\s*\S?\s*$", row), row
    # The demo cleaned up after itself.
    code, status, _ = rpctl("status", "--json")
    assert code == 0 and '"groups": []' in status
