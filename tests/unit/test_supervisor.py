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
import time

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


def test_an_outliving_child_runs_its_command_only_once_released(tmp_path):
    """Until release() the wrapper waits, dying with us (PR_SET_PDEATHSIG); a gate closed
    unreleased (the child's start failed) ends it."""
    mark = tmp_path / "ran"
    sup = Supervisor(outlive=True)
    sup.open()
    children = [Child(f"worker-{i}", socks.reuseport_socket("tcp", "127.0.0.1", 0), backoff=0.5) for i in (1, 2)]
    try:
        for c in children:
            sup.spawn(c, ["/bin/sh", "-c", f'echo "$RPCTL_X" >> {mark}; exec sleep 60'], {"RPCTL_X": c.name})
        assert sup.wait(0.5) == [] and not mark.exists(), "ran before it was released"
        sup.release(children[0])
        os.close(children[1].gate)  # as a start that failed leaves it
        children[1].gate = -1
        (ended,) = sup.wait(5)
        assert ended is children[1] and sup.reap(ended).how == "exited with status 1"
        deadline = time.monotonic() + 5
        while not mark.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert mark.read_text() == "worker-1\n"
        assert os.getsid(children[0].pid) == children[0].pid, "a session of its own"
    finally:
        sup.kill_all(children)
        for c in children:
            c.sock.close()
        sup.close()
