"""controller/store/generation.py: a failpoint reached logs its name, then dies as SIGKILL would kill it."""

from __future__ import annotations

import signal
import subprocess
import sys

FAILPOINT = """
import os
os.environ["RPCTL_FAILPOINT"] = "before-flip:" + ACTION
from rpctl.controller.store import generation
generation.failpoint("elsewhere")
print("passed the other point", flush=True)
generation.failpoint("before-flip")
print("not reached", flush=True)
"""


def test_failpoint_exit_logs_then_dies_by_sigkill():
    """No handler installed: logging's last resort puts the WARNING on stderr, as a test waits for it."""
    proc = subprocess.run([sys.executable, "-c", "ACTION = 'exit'" + FAILPOINT], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert proc.stdout == "passed the other point\n"
    assert proc.stderr.splitlines() == ["failpoint before-flip reached"]
