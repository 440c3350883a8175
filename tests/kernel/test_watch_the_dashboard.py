"""rpctl dashboard on a real terminal (tmux) over a real group under load.

tmux gives the dashboard a real pty, so what is checked is what an
operator sees: the members, a drain showing up within two seconds, `q`
and Ctrl-C ending it with the terminal handed back.  The tmux server runs
on a private socket so that it is started here, by the test process, and
so lives in the test's network namespace (a server already running for
the default socket would be in another one).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from rpctl.cli.demo import worker as demo_worker

from tests.support.traffic import PORT, ClientLoad, LightLoad

pytestmark = pytest.mark.kernel

_sessions = itertools.count()


class Tmux:
    """One private tmux server with one session running one command."""

    def __init__(self, tmp_path, width: int = 120, height: int = 40):
        self.socket = f"rpctl-test-{os.getpid()}-{next(_sessions)}"
        self.conf = tmp_path / "tmux.conf"
        # remain-on-exit: the pane stays after the dashboard ends, so its exit status can be read.
        self.conf.write_text("set -g remain-on-exit on\nset -g status off\n")
        self.errors = tmp_path / "dashboard.stderr"
        self.status = tmp_path / "dashboard.status"
        self.stty = tmp_path / "stty.after"
        self.width, self.height = width, height
        self.socket_path = ""

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["tmux", "-L", self.socket, "-f", str(self.conf), *args],
                              capture_output=True, text=True, check=check, timeout=10)

    def start(self, *dashboard_args: str) -> None:
        self.start_module("rpctl.cli", "dashboard", *dashboard_args)

    def start_module(self, module: str, *args: str) -> None:
        # A shell records the exit status: tmux may mark a pane dead before it reaps the
        # process, and then has no status to report.  `trap : INT` keeps the shell alive
        # through Ctrl-C without making the dashboard ignore it (a trapped signal is reset
        # to its default in children; an ignored one would be inherited).
        # `stty -a` afterwards shows the terminal modes the dashboard left behind.
        command = (f"trap : INT; {sys.executable} -m {module} {' '.join(args)} "
                   f"2>{self.errors}; code=$?; stty -a >{self.stty}; echo $code >{self.status}")
        self("new-session", "-d", "-s", "dash", "-x", str(self.width), "-y", str(self.height), command)
        self.socket_path = self.pane("#{socket_path}")

    def dashboard_pid(self) -> int:
        shell = int(self.pane("#{pane_pid}"))
        with open(f"/proc/{shell}/task/{shell}/children") as f:
            (child,) = f.read().split()
        return int(child)

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "dash").stdout

    def pane(self, fmt: str) -> str:
        return self("display-message", "-p", "-t", "dash", fmt).stdout.strip()

    def stderr(self) -> str:
        return self.errors.read_text() if self.errors.exists() else ""

    def wait_for(self, predicate, timeout: float, what: str) -> float:
        """Poll the screen until predicate(screen) holds; returns the seconds it took."""
        start = time.monotonic()
        screen = ""
        while time.monotonic() - start < timeout:
            screen = self.screen()
            if predicate(screen):
                return time.monotonic() - start
            if self.pane("#{pane_dead}") == "1":
                break
            time.sleep(0.05)
        pytest.fail(
            f"dashboard: {what} not seen within {timeout}s; screen:\n{screen}\nstderr:\n{self.stderr()}"
        )

    def wait_exit(self, timeout: float) -> int:
        """The dashboard's exit status as the shell saw it (128 + N: killed by signal N),
        once its pane is dead."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.status.exists() and self.status.read_text().endswith("\n"):
                if self.pane("#{pane_dead}") == "1":
                    return int(self.status.read_text())
            time.sleep(0.05)
        pytest.fail(f"dashboard still running {timeout}s after it was asked to quit:\n{self.screen()}")

    def terminal_restored(self) -> bool:
        """Canonical mode and echo are back on (cbreak mode turns both off)."""
        modes = self.stty.read_text()
        return bool(re.search(r"(?<!-)\bicanon\b", modes) and re.search(r"(?<!-)\becho\b", modes))

    def kill(self) -> None:
        self("kill-server", check=False)
        if self.socket_path:  # tmux leaves its socket file behind
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.socket_path)


@pytest.fixture
def tmux(tmp_path):
    made = []

    def make(**kw) -> Tmux:
        t = Tmux(tmp_path, **kw)
        made.append(t)
        return t

    yield make
    for t in made:
        t.kill()


@pytest.fixture
def workers():
    procs = []

    def start(name: str):
        proc, ready = demo_worker.spawn(name, f"127.0.0.1:{PORT}")
        procs.append(proc)
        return ready

    yield start
    for proc in procs:
        demo_worker.stop(proc, timeout=1)


def row(screen: str, name: str) -> str:
    return next((line for line in screen.splitlines() if line.startswith(name + " ")), "")


def test_dashboard_shows_members_and_a_drain_live_and_quits_on_q(netns, rpctl, tmux, workers):
    names = ["worker-1", "worker-2", "worker-3"]
    for name in names:
        ready = workers(name)
        rpctl.ok("register", name, "--pid", ready.pid, "--fd", ready.fd)
    with ClientLoad(PORT, concurrency=4, rate=300) as load:
        term = tmux()
        term.start()

        def all_members_flowing(screen: str) -> bool:
            # Every member active, with a measured rate above zero (connections are flowing).
            return all(re.search(r"● active .*%\s+[1-9][0-9.]*\s", row(screen, n)) for n in names)

        term.wait_for(all_members_flowing, 10, "three active members with traffic")
        screen = term.screen()
        assert f"tcp:127.0.0.1:{PORT}" in screen
        assert max(len(line) for line in screen.splitlines()) <= 120

        rpctl.ok("drain", "worker-2")
        took = term.wait_for(lambda s: re.search(r"[◐○] drain(ing|ed)", row(s, "worker-2")), 2.0,
                             "worker-2 draining or drained")
        term.wait_for(lambda s: "worker-2 drain started" in s, 2.0, "the drain event")
        # Demo workers accept at once: the queue empties and the row says so.
        term.wait_for(lambda s: "○ drained" in row(s, "worker-2") and "worker-2 drained" in s, 3.0,
                      "worker-2 drained")
        print(f"drain shown after {took:.2f}s")

        term("send-keys", "-t", "dash", "q")
        assert term.wait_exit(3) == 0, term.stderr()
        # The alternate screen is gone: the terminal shows what it showed before the dashboard.
        assert "rpctl dashboard" not in term.screen()
        assert term.terminal_restored(), term.stty.read_text()
        assert term.stderr() == ""
    assert sum(load.tally.failures.values()) == 0, load.tally.to_dict()


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_dashboard_leaves_cleanly_on_ctrl_c_and_sigterm(netns, rpctl, tmux, workers, how):
    ready = workers("solo")
    rpctl.ok("register", "solo", "--pid", ready.pid, "--fd", ready.fd)
    term = tmux(width=80, height=24)
    term.start("--interval", "0.25")
    term.wait_for(lambda s: "● active" in row(s, "solo"), 10, "the member")
    if how == "ctrl-c":
        term("send-keys", "-t", "dash", "C-c")
    else:
        os.kill(term.dashboard_pid(), signal.SIGTERM)
    assert term.wait_exit(3) == 0, term.stderr()
    assert "rpctl dashboard" not in term.screen()
    assert term.terminal_restored(), term.stty.read_text()
    assert term.stderr() == ""


def test_dashboard_killed_mid_run_changes_no_state(netns, rpctl, tmux, make_members):
    """The dashboard only reads: run over 64 members under light load, then SIGKILLed, it leaves
    the live generation as it was.  (Its CPU cost is measured by bench/dashboard_cpu.py.)"""
    members = make_members(port=PORT)
    for i in range(64):
        rpctl.ok(*members.register_args(f"m{i:02d}", members.add()))
    before = json.loads(rpctl.ok("status", "--json"))["groups"][0]

    with LightLoad(members) as load:
        term = tmux(width=160, height=48)
        term.start()
        term.wait_for(lambda s: "64 members" in s and "+" in s and "more members" in s, 15, "64 members")
        pid = term.dashboard_pid()
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            assert b"-m\0rpctl.cli\0dashboard" in f.read()
        time.sleep(1)  # a few more polls and frames under load
        os.kill(pid, signal.SIGKILL)
        assert term.wait_exit(3) == 128 + signal.SIGKILL
        # Nothing could restore the terminal after SIGKILL: the check that q and Ctrl-C pass sees it.
        assert not term.terminal_restored()
    after = json.loads(rpctl.ok("status", "--json"))["groups"][0]
    assert (after["generation"], after["published_ns"]) == (before["generation"], before["published_ns"])
    assert load.failed == 0


def test_demo_runs_its_steps_under_the_dashboard_and_closes_it(netns, tmux):
    """The README's main command on a terminal: the dashboard shows the
    workers and the current step, closes by itself after the last step, and
    the step tables follow on the restored screen."""
    t = tmux(width=120, height=40)
    t.start_module("rpctl.cli", "demo", "--port", "18081", "--step-seconds", "2")
    t.wait_for(lambda s: "demo step 2/4: drain worker-3" in s and "worker-4" in s, 30, "the drain step")
    screen = t.screen()
    assert "demo-18081" in screen and "tcp:127.0.0.1:18081" in screen, screen
    row = next(line for line in screen.splitlines() if line.startswith("worker-3 "))
    assert "draining" in row or "drained" in row, screen
    assert t.wait_exit(30) == 0, t.stderr()
    after = t.screen()
    assert "done: no connection failed" in after, after
    assert "undrain worker-3:" in after, after
    assert t.terminal_restored()
