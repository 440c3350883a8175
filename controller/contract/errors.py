"""Errors rpctl reports, each with the exit code the command line returns.

    Exception
     +-- RpctlError                 1  anything not listed below
          +-- UsageError            2  the call itself is wrong (the command line, or
          |                            a group left unnamed where several exist)
          +-- NotFound              3  no such group or member
          +-- InvalidInput          4  well-formed but refused (bad weight, duplicate
          |                            name, socket of another port, no such pid)
          +-- PermissionDenied      5  missing privileges (CAP_BPF, CAP_SYS_PTRACE...)
          +-- Unsupported           6  kernel too old, bpffs or kernel headers missing
          +-- StateError            7  pinned state is not what this rpctl expects
          +-- WaitTimeout           8  a wait (wait_drained) ran out of time

Messages are one line and say what was being done: "register worker-3: ...".
An error's arguments are the parts of that line: text, and references to
the library's own parameters and operations (refs.Param, refs.Call) where
a message names what the caller could pass or do.  str(error) words them
as the library does (`group`, `unload(group=web)`); the command line words
the same parts with its flags and commands (rpctl.cli.wording).
"""

from __future__ import annotations

import enum

from .refs import render

__all__ = [
    "ExitStatus",
    "RpctlError",
    "UsageError",
    "NotFound",
    "InvalidInput",
    "PermissionDenied",
    "Unsupported",
    "StateError",
    "WaitTimeout",
]


class ExitStatus(enum.IntEnum):
    OK = 0            # done
    ERROR = 1         # unexpected failure (a bug, or an unexpected kernel answer)
    USAGE = 2         # bad command line (argparse's own code)
    NOT_FOUND = 3     # no such group or member
    INVALID = 4       # input refused: nothing was changed
    PERMISSION = 5    # missing privileges
    UNSUPPORTED = 6   # kernel, bpffs or headers cannot do this
    STATE = 7         # pinned state of another version, or damaged
    TIMEOUT = 8       # a wait ran out of time; the operation itself stands


class RpctlError(Exception):
    """RpctlError(*parts): the message's text and refs.Param / refs.Call references, in order."""

    exit_status = ExitStatus.ERROR

    def __str__(self) -> str:
        return render(self.args)

    def within(self, *parts: object) -> "RpctlError":
        """The same error, of the same class, its message after `parts` ("adopt tcp:...: " + it)."""
        return type(self)(*parts, *self.args)


class UsageError(RpctlError):
    exit_status = ExitStatus.USAGE


class NotFound(RpctlError):
    exit_status = ExitStatus.NOT_FOUND


class InvalidInput(RpctlError):
    exit_status = ExitStatus.INVALID


class PermissionDenied(RpctlError):
    exit_status = ExitStatus.PERMISSION


class Unsupported(RpctlError):
    exit_status = ExitStatus.UNSUPPORTED


class StateError(RpctlError):
    exit_status = ExitStatus.STATE


class WaitTimeout(RpctlError):
    exit_status = ExitStatus.TIMEOUT
