"""Processes rpctl waits for: a pidfd that says when its process exits, and how it exited;
and the signals that ask rpctl's own long-running process to stop."""

from __future__ import annotations

import os
import select
import signal
import threading
from typing import Callable, Iterable

__all__ = ["STOP_SIGNALS", "describe_exit", "on_signals", "pidfd_exited", "stop_signals", "wait_exit"]

# Ctrl-C, `kill`, and a closed terminal or a dropped SSH session: each asks a
# long-running command to stop, and each gets the same clean stop.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def pidfd_exited(pidfd: int, timeout: float = 0.0) -> bool:
    """True once the process behind `pidfd` has exited (its pidfd turns readable),
    False after `timeout` seconds (0: do not wait).  poll(), not select(): a
    launcher of 256 members may hold pidfds past select's FD_SETSIZE."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(max(0.0, timeout) * 1000))


def wait_exit(pid: int, timeout: float) -> bool:
    """True once `pid` has exited (or never existed), False after `timeout`.
    Through a pidfd, so it works for processes that are not our children."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return pidfd_exited(pidfd, timeout)
    finally:
        os.close(pidfd)


def describe_exit(status: int) -> str:
    """A wait status as a log line says it: "exited with status 3", "exited with signal 9 (SIGKILL)"."""
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        try:
            return f"exited with signal {-code} ({signal.Signals(-code).name})"
        except ValueError:
            return f"exited with signal {-code}"
    return f"exited with status {code}"


def stop_signals() -> tuple[signal.Signals, ...]:
    """The STOP_SIGNALS this process does not ignore.  One ignored when it started stays
    ignored: `nohup rpctl run ...` asked to outlive its terminal (nohup ignores SIGHUP),
    and a background job of a script ignores SIGINT."""
    return tuple(s for s in STOP_SIGNALS if signal.getsignal(s) is not signal.SIG_IGN)


def on_signals(handler: Callable[[int, object], None], signums: Iterable[int]) -> Callable[[], None]:
    """`handler(signum, frame)` for each of `signums`; returns what restores the old handlers.
    Only the main thread may install handlers: elsewhere (a program that embeds rpctl) nothing
    is installed and the signals stay the embedding program's business."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    old = {s: signal.signal(s, handler) for s in signums}

    def restore() -> None:
        for s, previous in old.items():
            signal.signal(s, previous)

    return restore
