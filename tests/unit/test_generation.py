"""controller/store/generation.py: a failpoint reached logs its name, then dies as SIGKILL would kill it;
the members' counters summed over CPUs."""

from __future__ import annotations

import signal
import subprocess
import sys

from rpctl.controller.contract import abi
from rpctl.controller.store.generation import Group
from rpctl.controller.store.state import Layout

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


class _PerCpuStats:
    """A member_stats map of RP_MAX_MEMBERS entries on two CPUs: member i selected i + cpu."""

    def read_percpu_all(self, value_type, count, indexes=None):
        return [[value_type(selected=i + cpu, migrated=1) for cpu in range(2)] for i in range(count)]


def test_member_totals_sums_over_cpus_every_member_or_those_asked_for():
    group = Group(Layout(root="/nowhere", netns="netns1"), "web", {"member_stats": _PerCpuStats()})
    every = group.member_totals()
    assert len(every) == abi.RP_MAX_MEMBERS
    assert (every[0]["selected"], every[5]["selected"], every[5]["migrated"], every[5]["fallback"]) == (1, 11, 2, 0)
    assert set(every[5]) == {name for name, _ in abi.RpMemberStats._fields_}
    some = group.member_totals({1, 5})
    assert len(some) == abi.RP_MAX_MEMBERS
    assert (some[1], some[5]) == (every[1], every[5])
    assert some[0] == some[2] == {}
