"""controller/ops/supervisor.py with real processes: a child taken back (adopt) is watched,
signalled and stopped through its pidfd, and never waited for as our own.

Spawning, restarting and stopping the supervisor's own children under `rpctl run` and
`rpctl serve` is tests/kernel/test_run_and_join_workers.py and test_outlive_a_killed_serve.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from rpctl.controller.kernel import sockets as socks
from rpctl.controller.ops.supervisor import Child, Supervisor


def stranger() -> subprocess.Popen:
    """A process that the supervisor did not start (this test reaps it)."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def adopted(sup: Supervisor, proc: subprocess.Popen) -> Child:
    child = Child("worker-1", socks.reuseport_socket("tcp", "127.0.0.1", 0), backoff=0.5)
    sup.adopt(child, proc.pid, os.pidfd_open(proc.pid))
    return child


def test_an_adopted_childs_exit_is_seen_and_its_status_left_to_its_parent():
    sup = Supervisor()
    sup.open()
    proc = stranger()
    try:
        child = adopted(sup, proc)
        assert sup.wait(0) == [] and not sup.exited(child)
        proc.kill()
        assert sup.wait(5) == [child]
        gone = sup.reap(child)
        assert gone.pid == proc.pid and "taken back" in gone.how and child.pid == 0 and child.pidfd == -1
        assert proc.wait(5) == -signal.SIGKILL, "reap() left the wait status to the real parent"
        child.sock.close()
    finally:
        sup.close()


def test_stop_all_and_kill_all_reach_an_adopted_child_through_its_pidfd():
    sup = Supervisor()
    sup.open()
    procs = [stranger(), stranger()]
    try:
        first, second = (adopted(sup, p) for p in procs)
        sup.stop_all([first])  # SIGTERM: python's default is to die
        assert first.pid == 0 and procs[0].wait(5) == -signal.SIGTERM
        sup.kill_all([first, second])
        assert second.pid == 0 and second.pidfd == -1 and procs[1].wait(5) == -signal.SIGKILL
        first.sock.close()
        second.sock.close()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        sup.close()
