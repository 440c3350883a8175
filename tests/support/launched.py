"""Processes for kernel tests: `rpctl run` as a subprocess, and waiting on
processes and on the group's state."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time

from rpctl.cli.demo.worker import parse_ready
from rpctl.controller.store.state import Layout


def wait_until(what: str, check, timeout: float = 10.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def stderr_line(proc: subprocess.Popen, want: str, timeout: float) -> str:
    """The first line of proc's stderr that contains `want`; fails with what came instead."""
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stderr], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        line = proc.stderr.readline()
        if not line:
            break  # the process ended
        seen.append(line)
        if want in line:
            return line
    raise AssertionError(f"{want!r} not seen on stderr within {timeout}s: {''.join(seen)!r} (exit {proc.poll()})")


def alive(pid: int) -> bool:
    """True for a running process; a zombie counts as gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def ppid_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def members(rpctl, group: str | None = "web") -> dict[str, dict]:
    argv = ["status", "--json"] + (["--group", group] if group else [])
    (view,) = json.loads(rpctl.ok(*argv))["groups"]
    return {m["name"]: m for m in view["members"]}


class Run:
    """One `rpctl run` subprocess (or another long-running rpctl command:
    `argv`) and what it printed; its children's stdout is its own."""

    def __init__(self, tmp_path, args: list, cmd: list, argv: list | None = None, env: dict | None = None):
        self.out_path = tmp_path / f"run-{id(self)}.out"
        self.err_path = tmp_path / f"run-{id(self)}.err"
        argv = ["run", *args, "--", *cmd] if argv is None else argv
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "rpctl.cli", *map(str, argv)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=None if env is None else {**os.environ, **env},
            )
        self.seen: set[int] = set()

    def wait_logged(self, text: str, timeout: float = 10.0, after: int = 0) -> str:
        """Until `text` is in its stderr (from character `after` on); returns the stderr."""

        def check():
            err = self.stderr()
            assert text in err[after:] or self.proc.poll() is None, f"exited {self.proc.returncode}: {err}"
            return err if text in err[after:] else None

        return wait_until(f"{text!r} on rpctl's stderr", check, timeout)

    def stderr(self) -> str:
        return self.err_path.read_text()

    def ready_pids(self) -> set[int]:
        pids = set()
        for line in self.out_path.read_text().splitlines():
            if line.startswith("ready "):
                pids.add(parse_ready(line).pid)
        self.seen |= pids
        return pids

    def wait_members(self, rpctl, names: set, group: str = "web") -> dict[str, dict]:
        """Status once every member is registered with a child that is ready."""

        def check():
            assert self.proc.poll() is None, f"launcher exited {self.proc.returncode}: {self.stderr()}"
            if group not in Layout().groups():
                return None
            found = members(rpctl, group)
            ready = self.ready_pids()
            if set(found) == names and all(m["pid"] in ready and m["state"] == "active"
                                           for m in found.values()):
                return found
            return None

        return wait_until(f"{sorted(names)} registered and ready", check)

    def terminate(self, timeout: float = 15.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def cleanup(self) -> list[int]:
        """Stop the launcher; returns the children that outlived it (killed now)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()  # a run's children die with it; a serve's outlive it: killed below
                self.proc.wait()
        self.ready_pids()
        deadline = time.monotonic() + 3
        while any(alive(pid) for pid in self.seen) and time.monotonic() < deadline:
            time.sleep(0.05)
        leftovers = [pid for pid in self.seen if alive(pid)]
        for pid in leftovers:
            os.kill(pid, signal.SIGKILL)
        return leftovers
