"""Close the terminal of `rpctl run` or `rpctl demo` (SIGHUP), or SIGKILL it, then start it again.

A closed terminal or a dropped SSH session sends SIGHUP: run and the demo
stop their workers and remove their group, as on SIGTERM or Ctrl-C, and a
new one starts on the same port.  A SIGKILLed one can clean nothing up: its
workers die with it and its group is left with every member gone; the next
run (or demo) on that port takes the group over, and removes it when it
stops in turn.
"""

from __future__ import annotations

import signal
import sys

import pytest
from rpctl.cli.demo import loadgen
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
