"""Processes rpctl waits for: a pidfd that says when its process exits, and how it exited."""

from __future__ import annotations

import os
import select
import signal

__all__ = ["describe_exit", "pidfd_exited", "wait_exit"]


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
