"""controller/ops/orphans.py: which live members are children of a dead launcher, read from real processes.

Each case starts a real child of this test holding a real SO_REUSEPORT socket on fd 3, with the
environment a launcher gives its children, and asks find() about it: the rules are read from
/proc and pidfd_getfd, so they are tested on them.  (A launcher's own parent is alive here:
a child "of a dead launcher" is one whose RPCTL_LAUNCHER_PID names a process that is not its
parent.)  What a serve does with them is tests/kernel/test_outlive_a_killed_serve.py.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest
from hypothesis import given
from rpctl.controller.kernel import sockets as socks
from rpctl.controller.ops import orphans

from tests.support import hostile
from tests.support.views import member

ARGV = [sys.executable, "-c", "import time; time.sleep(60)"]


def _environ(pid: int) -> bytes:
    with open(f"/proc/{pid}/environ", "rb") as f:
        return f.read()


class Child:
    """A sleeping child with a reuseport socket on fd 3 and the given environment."""

    def __init__(self, env: dict[str, str]):
        self.sock = socks.reuseport_socket("tcp", "127.0.0.1", 0)
        self.pid = os.posix_spawn(sys.executable, ARGV, {**os.environ, **env},
                                  file_actions=[(os.POSIX_SPAWN_DUP2, self.sock.fileno(), 3)])
        # posix_spawn returns once the exec has begun: the kernel shows the new environment
        # a moment later (a launcher's children are looked at seconds after their start).
        deadline = time.monotonic() + 5
        while not _environ(self.pid) and time.monotonic() < deadline:
            time.sleep(0.001)

    @property
    def cookie(self) -> int:
        return socks.cookie_of(self.sock)

    def close(self) -> None:
        if self.pid:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
            self.pid = 0
        self.sock.close()


@pytest.fixture
def child():
    made = []

    def start(name: str = "worker-1", launcher: int = 1, argv=ARGV, **env) -> Child:
        marks = orphans.child_marks(name, argv)
        marks[orphans.LAUNCHER_VAR] = str(launcher)
        c = Child({**marks, **env})
        made.append(c)
        return c

    yield start
    for c in made:
        c.close()


def find(c: Child, name: str = "worker-1", names=("worker-1",), argv=ARGV, **kw) -> dict:
    found = orphans.find([member(0, name, **{"pid": c.pid, "fd": 3, "cookie": c.cookie, **kw})], names,
                         lambda _: argv)
    for o in found.values():
        o.sock.close()
        os.close(o.pidfd)
    return found


def test_a_child_whose_launcher_is_not_its_parent_is_taken_back_with_its_socket(child):
    c = child(launcher=1)  # this test is its parent: the launcher named in it is gone
    found = orphans.find([member(0, "worker-1", pid=c.pid, fd=3, cookie=c.cookie)], ["worker-1"], lambda _: ARGV)
    o = found["worker-1"]
    try:
        assert o.pid == c.pid and o.same_command
        assert socks.cookie_of(o.sock) == c.cookie, "our copy is the member's socket"
        signal.pidfd_send_signal(o.pidfd, 0)  # the pidfd is the child's, alive
    finally:
        o.sock.close()
        os.close(o.pidfd)


def test_the_children_of_a_live_launcher_are_never_taken(child):
    assert find(child(launcher=os.getpid())) == {}


def test_another_socket_name_or_process_is_not_taken(child):
    c = child()
    assert find(c, cookie=c.cookie + 1) == {}, "fd 3 is no longer the member's socket"
    assert find(child(name="worker-2")) == {}, "started as another member"
    assert find(child(**{orphans.LAUNCHER_VAR: "x"})) == {}, "no launcher's pid"
    assert find(c, gone=True) == {} and find(c, names=("worker-2",)) == {}


def test_a_child_without_a_launchers_marks_is_someone_elses(child):
    c = Child({})  # a server that registered itself under the name
    try:
        assert find(c) == {}
    finally:
        c.close()


def test_a_child_of_another_command_is_found_as_such(child):
    found = find(child(argv=[*ARGV, "--old"]))
    assert not found["worker-1"].same_command


def test_a_gone_process_is_not_taken(child):
    c = child()
    pid = c.pid
    c.close()
    c.sock = socks.reuseport_socket("tcp", "127.0.0.1", 0)  # for cookie; closed by the fixture
    assert orphans.find([member(0, "worker-1", pid=pid, fd=3, cookie=c.cookie)], ["worker-1"],
                        lambda _: ARGV) == {}


def test_command_ids_tell_command_lines_apart():
    assert orphans.command_id(["a", "b"]) == orphans.command_id(["a", "b"])
    assert len({orphans.command_id(v) for v in (["a", "b"], ["b", "a"], ["a b"], ["a", "b", ""])}) == 4


def test_environ_entries_that_are_not_assignments_are_skipped():
    raw = b"A=1\0B=x=y\0junk\0=nameless\0C=\0\xff\xfe=\xff\0"
    env = orphans.parse_environ(raw)
    assert env["A"] == "1" and env["B"] == "x=y" and env["C"] == "" and "junk" not in env and "" not in env
    assert "\ufffd\ufffd" in env


@given(hostile.mutated(b"RPCTL_MEMBER=worker-1\0RPCTL_LAUNCHER_PID=4242\0RPCTL_COMMAND_ID=89abcdef\0"))
def test_any_environ_reads_as_text_variables(raw):
    env = orphans.parse_environ(raw)
    assert all(isinstance(k, str) and k and isinstance(v, str) for k, v in env.items())
