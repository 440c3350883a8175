"""Dashboard CPU: what `rpctl dashboard` costs left running on a busy group.

One group of 64 members (test-held SO_REUSEPORT listeners registered through
the library in a fresh network namespace) under light load (40 connections
every 0.25 s from this process).  The dashboard runs as its own process on a
pseudo-terminal of the size measured, at its default interval, exactly as an
operator starts it; its CPU is utime + stime from /proc over a fixed window
after a warm-up.  Where a frame's time goes (the poll, with and without the
sock_diag queue depths, and laying the frame out) is timed in this process.

    .venv/bin/python -m bench.dashboard_cpu      (as root, from the repository root; rewrites its section
                                                  of docs/benchmarks.md)
    ./scripts/bench.sh dashboard_cpu             (the same, after setting up)
    ./scripts/bench.sh --quick dashboard_cpu     (smoke check; figures not kept)
"""

from __future__ import annotations

import fcntl
import io
import os
import pty
import struct
import subprocess
import sys
import termios
import threading
import time
from typing import Callable

from bench.common import alternate, median, span, table, write_section
from tests.support.netns import fresh_netns
from tests.support.traffic import LightLoad, Members

SECTION = "dashboard-cpu"
PORT = 7400
MEMBERS = 64
INTERVAL = 0.25  # the dashboard's default; passed explicitly so that the figure says what it measured
SIZES, QUICK_SIZES = ((160, 48), (80, 24)), ((160, 48),)
ROUNDS, QUICK_ROUNDS = 3, 1
WARMUP_S, QUICK_WARMUP_S = 2.0, 0.5       # past start-up: imports, the first polls
WINDOW_S, QUICK_WINDOW_S = 10.0, 2.0
GOAL_PERCENT = 5.0
TIMED_CALLS = 50
# The parts of a frame timed in-process (frame_parts), as the table names them.
POLL = "poll (maps + sock_diag queue depths)"
POLL_MAPS = "poll without queue depths (maps only)"
DRAW = "lay out and print one 160x48 frame"


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (fields 14 and 15 of /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Terminal:
    """A pseudo-terminal of a given size whose output is read (and dropped) as fast as it comes,
    so that the dashboard never waits on a slow screen; `seen` is set once `marker` was drawn."""

    def __init__(self, width: int, height: int, marker: bytes):
        self.master, self.slave = pty.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))
        self.marker = marker
        self.seen = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        tail = b""
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: the last process holding the terminal closed it
                return
            if not data:
                return
            tail = (tail + data)[-4096:]
            if self.marker in tail:
                self.seen.set()

    def close(self) -> None:
        os.close(self.master)
        self.reader.join(5)


def dashboard_cpu(width: int, height: int, warmup: float, window: float) -> float:
    """Percent of one core the dashboard used over `window` seconds, on a width x height terminal."""
    term = Terminal(width, height, marker=f"{MEMBERS} members".encode())
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}  # the terminal's size rules
    env["TERM"] = "xterm-256color"
    proc = subprocess.Popen(
        [sys.executable, "-m", "rpctl.cli", "dashboard", "--interval", str(INTERVAL)],
        stdin=term.slave, stdout=term.slave, stderr=subprocess.PIPE, env=env, start_new_session=True,
    )
    os.close(term.slave)
    try:
        if not term.seen.wait(30):
            proc.kill()
            raise RuntimeError(f"the dashboard drew no {MEMBERS}-member group in 30 s: {proc.communicate()[1]!r}")
        time.sleep(warmup)
        t0, c0 = time.monotonic(), cpu_seconds(proc.pid)
        time.sleep(window)
        t1, c1 = time.monotonic(), cpu_seconds(proc.pid)
        os.write(term.master, b"q")
        _, err = proc.communicate(timeout=10)
        if proc.returncode != 0:
            raise RuntimeError(f"the dashboard exited {proc.returncode}: {err!r}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        term.close()
    return 100 * (c1 - c0) / (t1 - t0)


def ms_per_call(fn: Callable[[], object], calls: int) -> float:
    """Median wall time of one call, in ms."""
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return median(times)


def frame_parts(group_name: str, calls: int) -> dict[str, float]:
    """Median ms of what one frame does, timed in this process: the poll with and without the
    queue depths (sock_diag), and laying out and printing a 160x48 frame."""
    from rich.console import Console
    from rpctl.cli.dashboard_history import History, Snapshot
    from rpctl.cli.dashboard_screen import render
    from rpctl.controller.read import views

    def poll():
        return Snapshot(time=time.monotonic(), groups=views.read_views(group=group_name), wall=time.time())

    history = History()
    history.update(poll())
    snap = poll()
    history.update(snap)
    console = Console(file=io.StringIO(), width=160, height=48, force_terminal=True, color_system="truecolor")

    def draw():
        console.file = io.StringIO()
        console.print(render(snap, history, 160, 48))

    return {
        POLL: ms_per_call(poll, calls),
        POLL_MAPS: ms_per_call(lambda: views.read_views(group=group_name, with_queues=False), calls),
        DRAW: ms_per_call(draw, calls),
    }


def measure(quick: bool) -> tuple[dict[str, list[float]], dict[str, float], int]:
    sizes = QUICK_SIZES if quick else SIZES
    rounds = QUICK_ROUNDS if quick else ROUNDS
    warmup, window = (QUICK_WARMUP_S, QUICK_WINDOW_S) if quick else (WARMUP_S, WINDOW_S)
    with fresh_netns("rpctl-b"):
        members = Members(port=PORT)
        try:
            for _ in range(MEMBERS):
                members.add()
            name = members.register_all(prefix="m")
            with LightLoad(members) as load:
                cpu = alternate(rounds, {
                    f"{w}x{h}": (lambda w=w, h=h: dashboard_cpu(w, h, warmup, window)) for w, h in sizes
                })
                parts = frame_parts(name, 5 if quick else TIMED_CALLS)
        finally:
            members.close()
    if load.failed:
        raise RuntimeError(f"{load.failed} connections of the light load failed")
    return cpu, parts, load.connected


def report(cpu: dict[str, list[float]], parts: dict[str, float], connections: int, quick: bool,
           load: float) -> str:
    window = QUICK_WINDOW_S if quick else WINDOW_S
    warmup = QUICK_WARMUP_S if quick else WARMUP_S
    rows = []
    for size, values in cpu.items():
        spread = f" ({span(values, '{:.1f}')} %)" if len(values) > 1 else ""
        rows.append([MEMBERS, f"{INTERVAL:g} s", size, f"{median(values):.1f} %{spread}", len(values)])
    worst = max(median(v) for v in cpu.values())
    poll, maps, draw = parts[POLL], parts[POLL_MAPS], parts[DRAW]
    rounds = max(len(v) for v in cpu.values())
    return "\n".join([
        "### Dashboard CPU (issue 4)",
        "",
        "```sh",
        ".venv/bin/python -m bench.dashboard_cpu     # or: ./scripts/bench.sh dashboard_cpu",
        "```",
        "",
        f"`rpctl dashboard` at its default refresh ({INTERVAL:g} s) watching one group of {MEMBERS}",
        f"members ({MEMBERS} test-held SO_REUSEPORT listeners registered in a fresh network",
        "namespace, light load: 40 connections every 0.25 s), on a pseudo-terminal of the size",
        "shown whose output is read as fast as it comes; CPU = utime + stime of the dashboard",
        f"process from /proc over {window:g} s after {warmup:g} s of warm-up, a fresh dashboard each",
        f"time; median of {rounds} alternating rounds (range in brackets). Other processes sharing the",
        f"cores raise the figures: the 1-minute load average was {load:.2f} when the runs started.",
        "",
        table(["members", "interval", "terminal", "CPU of one core", "runs"], rows),
        "",
        f"Goal: under {GOAL_PERCENT:g} %; slowest here {worst:.1f} %"
        f" ({'met' if worst < GOAL_PERCENT else 'NOT met'}). Load during the runs: {connections} connections.",
        "",
        f"Where a frame's time goes ({MEMBERS} members, median of {5 if quick else TIMED_CALLS} calls"
        " in the benchmark's process):",
        "",
        table(["part of a frame", "ms"], [[k, f"{v:.1f}"] for k, v in parts.items()]),
        "",
        f"So a frame is about {poll + draw:.1f} ms of work, {1 / INTERVAL:g} times a second: the poll ({poll:.1f} ms,",
        f"{poll - maps:.1f} ms of it the sock_diag dump for the queue depths) and",
        f"laying out the frame itself ({draw:.1f} ms).",
        "Laying the rows out by hand instead of with rich's Table (about ten times the CPU per",
        "frame) cut the dashboard from about 5 % of a core to the figures above.",
    ])


def run(quick: bool) -> None:
    load = os.getloadavg()[0]  # before ours: CPU time per frame grows when other processes share the cores
    cpu, parts, connections = measure(quick)
    write_section(SECTION, report(cpu, parts, connections, quick, load))
    for size, values in cpu.items():
        print(f"{MEMBERS} members, {size}: " + ", ".join(f"{v:.1f} %" for v in values), flush=True)
    print(", ".join(f"{k} {v:.1f} ms" for k, v in parts.items()), flush=True)


if __name__ == "__main__":
    if sys.argv[1:]:
        sys.exit("usage: python -m bench.dashboard_cpu "
                 "(no arguments; ./scripts/bench.sh --quick dashboard_cpu to smoke-test)")
    run(quick=False)
