"""Close the terminal of `rpctl run` or `rpctl demo` (SIGHUP), or SIGKILL it, then start it again.

A closed terminal or a dropped SSH session sends SIGHUP: run and the demo
stop their workers and remove their group, as on SIGTERM or Ctrl-C, and a
new one starts on the same port.  Both with a SIGHUP sent by hand and with a
real terminal (a pty, their controlling terminal) hung up under them, the
demo's dashboard on it.  A SIGKILLed one can clean nothing up: its
workers die with it and its group is left with every member gone; the next
run (or demo) on that port takes the group over, and removes it when it
stops in turn.
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import struct
import subprocess
import sys
import termios
import threading

import pytest
from rpctl.cli.demo import loadgen
from rpctl.controller.kernel.process import wait_exit
from rpctl.controller.store.state import Layout

from tests.support.launched import members, wait_until

pytestmark = pytest.mark.kernel

PORT = 7190
DEMO_PORT = 18090
WORKER = [sys.executable, "-m", "rpctl.cli.demo.worker", "--name", "$RPCTL_MEMBER"]
NAMES = {"worker-1", "worker-2"}


def run_web(launch):
    return launch(["--group", "web", "-n", 2, "--listen", f"127.0.0.1:{PORT}"], WORKER)


def serves(names: set) -> None:
    tally = loadgen.run_tcp("127.0.0.1", PORT, count=200, concurrency=4)
    assert sum(tally.failures.values()) == 0, tally.to_dict()
    assert set(tally.by_name) == names, tally.to_dict()


def no_state_left(r=None) -> None:
    layout = Layout()
    assert layout.groups() == [], f"groups left behind: {layout.groups()}; {r.stderr() if r else ''}"


def stopped_by(r, signum: int, timeout: float = 20.0) -> int:
    r.proc.send_signal(signum)
    return r.proc.wait(timeout=timeout)


def test_sighup_stops_a_run_and_removes_its_group(launch, rpctl):
    r = run_web(launch)
    r.wait_members(rpctl, NAMES)
    assert stopped_by(r, signal.SIGHUP) == 0, r.stderr()
    no_state_left()
    # A new run on the same port starts and serves.
    again = run_web(launch)
    again.wait_members(rpctl, NAMES)
    serves(NAMES)
    assert stopped_by(again, signal.SIGTERM) == 0, again.stderr()
    no_state_left()


def test_a_sigkilled_run_leaves_its_port_to_the_next_run(launch, rpctl):
    r = run_web(launch)
    first = r.wait_members(rpctl, NAMES)
    r.proc.kill()
    r.proc.wait(timeout=10)
    # Its workers die with it (PR_SET_PDEATHSIG); the group stays, every member gone.
    wait_until("every member gone", lambda: all(m["state"] == "gone" for m in members(rpctl).values()))
    again = run_web(launch)
    now = again.wait_members(rpctl, NAMES)
    assert {m["pid"] for m in now.values()}.isdisjoint(m["pid"] for m in first.values())
    serves(NAMES)
    assert "took over group web" in again.stderr()
    # The run that took the group over removes it when it stops, as if it had made it.
    assert stopped_by(again, signal.SIGTERM) == 0, again.stderr()
    no_state_left()


def demo(launch, keep: bool = True):
    argv = ["demo", "--port", DEMO_PORT, "--workers", 2, "--step-seconds", 0.5] + (["--keep"] if keep else [])
    return launch([], [], argv=argv)


def wait_kept(d) -> None:
    """Until the demo (--keep, no terminal) has done its steps and keeps its group running."""
    wait_until("the demo's steps", lambda: d.proc.poll() is not None or "keeps running" in d.out_path.read_text(),
               timeout=60)
    assert d.proc.poll() is None, f"demo exited {d.proc.returncode}: {d.stderr()}"


def test_sighup_stops_the_demo_and_a_new_demo_starts_on_its_port(launch):
    d = demo(launch)
    wait_kept(d)
    assert stopped_by(d, signal.SIGHUP) >= 0, f"killed by SIGHUP: {d.stderr()}"
    no_state_left(d)
    # Its port is free for the next demo (its TIME_WAIT connections do not count as a listener).
    again = demo(launch, keep=False)
    assert again.proc.wait(timeout=60) == 0, again.stderr()
    assert "done: no connection failed" in again.out_path.read_text()
    no_state_left()


def test_a_sigkilled_demo_leaves_its_port_to_the_next_demo(launch):
    d = demo(launch)
    wait_kept(d)
    d.proc.kill()
    d.proc.wait(timeout=10)
    assert Layout().groups() == [f"demo-{DEMO_PORT}"]
    again = demo(launch, keep=False)
    assert again.proc.wait(timeout=60) == 0, again.stderr()
    no_state_left()


class Terminal:
    """A command on a terminal of its own (a pty, its controlling terminal), read all along as a
    terminal emulator reads it; close() is what closing the terminal's window does."""

    def __init__(self, argv: list):
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rpctl.cli", *map(str, argv)], stdin=slave, stdout=slave, stderr=slave,
            start_new_session=True, preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
        )
        os.close(slave)
        self.shown = bytearray()
        self.closing = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        # Never blocked in read() when close() comes: a read in progress would hold the
        # master open, and the hangup would wait for the command's next output.
        while not self.closing.is_set():
            if select.select([self.master], [], [], 0.05)[0]:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:  # EIO: the command and every holder of the terminal are gone
                    return
                if not chunk:
                    return
                self.shown += chunk

    def close(self) -> None:
        """The kernel hangs the terminal up: SIGHUP to the command, its writes fail from now on."""
        if self.master >= 0:
            self.closing.set()
            self.reader.join()
            os.close(self.master)
            self.master = -1

    def stop(self) -> None:
        self.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def terminal(netns):
    """Terminal(argv) factory, in the test's network namespace; each terminal closed after the test."""
    made = []

    def start(*argv) -> Terminal:
        made.append(Terminal(list(argv)))
        return made[-1]

    yield start
    for t in made:
        t.stop()


def active(rpctl, group: str) -> int:
    """How many members of `group` are active (0 while there is no such group)."""
    if group not in Layout().groups():
        return 0
    return sum(m["state"] == "active" for m in members(rpctl, group).values())


@pytest.mark.parametrize("command", [
    ["run", "--group", "web", "-n", 2, "--listen", f"127.0.0.1:{PORT}", "--", *WORKER],
    ["demo", "--port", PORT, "--workers", 2, "--step-seconds", 0.5, "--keep"],  # its dashboard on the terminal
])
def test_closing_the_terminal_stops_its_workers_and_removes_its_group(terminal, rpctl, command):
    t = terminal(*command)
    group = "web" if command[0] == "run" else f"demo-{PORT}"
    wait_until("its members", lambda: active(rpctl, group) == 2, timeout=30)
    if command[0] == "demo":  # closed while its dashboard is up
        wait_until("the demo's dashboard", lambda: b"quits" in t.shown, timeout=30)
    found = members(rpctl, group)
    t.close()
    code = t.proc.wait(timeout=30)
    assert code != -signal.SIGHUP, f"killed by SIGHUP, nothing cleaned up: {bytes(t.shown[-800:])!r}"
    no_state_left()
    for m in found.values():
        assert wait_exit(m["pid"], 5), f"{m['name']} (pid {m['pid']}) outlived its terminal"
    # The port is free for the next one.
    terminal(*command)
    wait_until("the next one's members", lambda: active(rpctl, group) == 2, timeout=30)
