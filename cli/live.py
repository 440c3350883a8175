"""The live view of `rpctl dashboard` and `rpctl demo`: poll, render, redraw.

It only reads: the pinned maps (through controller.views.read_views) and the
queue depths sock_diag reports, or, for many hosts, a Prometheus server
(controller.prometheus_source).  Nothing is written and nothing is held
open between polls, so starting, stopping or killing a dashboard never
changes how connections are steered.  Rates, recent shares and events are
computed from successive polls (dashboard_history.History).

On a terminal it takes the screen (rich Live) and redraws every --interval
seconds until `q` or Ctrl-C; without one it prints one frame (or --frames
N), which is what scripts and CI logs want.

This module imports nothing heavy at the top (rich.live only once a screen
is drawn); the polling and drawing are here, the command in dashboard_cmd.py.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import time
from typing import Callable, Iterator, Optional

DEFAULT_INTERVAL = 0.25  # 4 frames a second: a drain shows up before the operator looks away
MIN_INTERVAL = 0.05
MAX_INTERVAL = 60.0
QUIT_KEYS = (b"q", b"Q", b"\x03")  # \x03: Ctrl-C, should the terminal not turn it into SIGINT


def local_read(group: Optional[str]) -> Callable[[], list]:
    """What a poll reads on this host: the group asked for, or every group.

    A group removed while we read is not an error: the dashboard shows it
    gone (an event) and goes on.
    """
    from rpctl.controller.contract.errors import NotFound
    from rpctl.controller.read.views import read_views

    def read() -> list:
        try:
            return read_views(group=group)
        except NotFound:
            return []

    return read


def fleet_read(read: Callable[[], list]) -> Callable[[], list]:
    """What a poll reads through Prometheus: `read`, or the groups of the last poll that could
    read when this one cannot (the server restarts, the network hiccups): the dashboard goes
    on, and its events say nothing that did not happen."""
    from rpctl.controller.contract.errors import RpctlError

    last: list = []

    def poll_fleet() -> list:
        try:
            last[:] = read()
        except RpctlError:
            pass
        return list(last)

    return poll_fleet


def poll(read: Callable[[], list]):
    """One Snapshot of what `read` returns (local_read, fleet_read)."""
    from .dashboard_history import Snapshot

    return Snapshot(time=time.monotonic(), groups=read(), wall=time.time())


class _Keys:
    """Keys pressed on a terminal's stdin, without echo or waiting for Enter.

    cbreak mode with VMIN=VTIME=0 (reads never block) and select() for the
    wait; _keys() restores the terminal's settings in a finally, whatever
    ends the loop.
    """

    def __init__(self, fd: int):
        import termios
        import tty

        self.fd: Optional[int] = fd
        self.saved = termios.tcgetattr(fd)
        tty.setcbreak(fd, termios.TCSANOW)
        attrs = termios.tcgetattr(fd)
        attrs[6][termios.VMIN] = 0
        attrs[6][termios.VTIME] = 0
        termios.tcsetattr(fd, termios.TCSANOW, attrs)

    def wait_quit(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds; True when a quit key was pressed."""
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            left = deadline - time.monotonic()
            if self.fd is None:
                if left > 0:
                    time.sleep(left)
                return False
            ready, _, _ = select.select([self.fd], [], [], max(0.0, left))
            if not ready:
                return False
            data = os.read(self.fd, 1024)
            if not data:
                self.fd = None  # the terminal hung up: stop listening, keep drawing
                continue
            if any(k in data for k in QUIT_KEYS):
                return True


@contextlib.contextmanager
def _keys() -> Iterator[Optional[_Keys]]:
    """_Keys on stdin when it is a terminal, None otherwise (Ctrl-C still ends the dashboard)."""
    try:
        fd = sys.stdin.fileno()
        interactive = os.isatty(fd)
    except (AttributeError, OSError, ValueError):
        interactive = False
    if not interactive:
        yield None
        return
    keys = _Keys(fd)
    try:
        yield keys
    finally:
        import termios

        try:
            termios.tcsetattr(fd, termios.TCSADRAIN, keys.saved)
        except termios.error:
            pass  # the terminal is gone (hung up): there is nothing left to restore


@contextlib.contextmanager
def interrupted_by_stop_signals() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into KeyboardInterrupt, as Ctrl-C is, for the duration, so that
    `kill` or a closed terminal also goes through the finally blocks that restore the terminal
    (the dashboard) or stop the workers (the demo).  A signal ignored when rpctl started (nohup)
    stays ignored; on another thread than the main one nothing changes."""
    from rpctl.controller.kernel.process import on_signals, stop_signals

    def stop(signum, frame):
        raise KeyboardInterrupt

    restore = on_signals(stop, stop_signals())
    try:
        yield
    finally:
        restore()


def print_frames(console, history, read: Callable[[], list], interval: float, frames: int) -> None:
    """Without a terminal: N frames, one after another.  The first poll comes an interval
    before the first frame, so that its rates are measured, not blank."""
    from .dashboard_screen import render

    history.update(poll(read))
    for _ in range(frames):
        time.sleep(interval)
        snap = poll(read)
        history.update(snap)
        width, height = console.size
        console.print(render(snap, history, width, height))


def show_live(console, history, read: Callable[[], list], interval: float, frames: Optional[int],
          until: Optional[Callable[[], bool]] = None, caption: Optional[Callable[[], str]] = None) -> None:
    """On a terminal: the whole screen, redrawn every interval, until q, Ctrl-C, N frames
    or until() holds (`rpctl demo` ends it when its steps are done).  caption() is shown
    on the title line before the key hint (the demo's current step)."""
    from rich.live import Live

    from .dashboard_screen import render

    shown = 0
    try:
        with interrupted_by_stop_signals(), _keys() as keys, Live(
            console=console, screen=True, auto_refresh=False, transient=True,
            redirect_stdout=False, redirect_stderr=False,
        ) as live:
            quit_hint = "q quits" if keys is not None else "Ctrl-C quits"
            due = time.monotonic()
            while True:
                # The caption before the poll: a frame never shows a caption newer
                # than its data (the demo names a step once it has applied it).
                hint = f"{caption()}; {quit_hint}" if caption else quit_hint
                snap = poll(read)
                history.update(snap)
                width, height = console.size
                live.update(render(snap, history, width, height, hint=hint), refresh=True)
                shown += 1
                if (frames is not None and shown >= frames) or (until is not None and until()):
                    return
                # A fixed schedule, but a slow poll does not make frames pile up behind it.
                now = time.monotonic()
                due = max(due + interval, now)
                if keys is not None:
                    if keys.wait_quit(due - now):
                        return
                else:
                    time.sleep(due - now)
    except KeyboardInterrupt:
        return  # Ctrl-C (or SIGTERM, SIGHUP) is how a dashboard is meant to end: the terminal is restored
