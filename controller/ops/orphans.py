"""Children of a launcher that died: told apart from everyone else's, and taken back.

`rpctl serve` starts the children of its run groups so that they outlive
it (decision 0025): an OOM kill of serve must not take every run group's
servers down with it.  The next launcher of the group (the next serve, or
an `rpctl run` of the same group) finds them as live members of the group
and takes them back instead of refusing their names.

A child is one of ours to take back only when all of these hold, each read
from the kernel, not from anything the child could have written later:

* it is a live member of the group under one of the launcher's names, and
  fd MEMBER.fd of its pid is still the member's socket (its cookie): so a
  pid reused by another process is never taken;
* its environment (as it was at exec) holds RPCTL_MEMBER=<that name> and
  RPCTL_LAUNCHER_PID=<the pid of the launcher that started it>;
* its parent is no longer that launcher: a launcher's children are
  reparented when it dies, and never otherwise, so a child whose launcher
  lives (another `rpctl run` on the group) is never taken from it.

RPCTL_COMMAND_ID (a checksum of the child's command line) says whether the
child runs the command the launcher would start now; one that does not (the
file was changed while no serve ran) has its socket taken and is stopped,
and a child of the new command serves that socket.
"""

from __future__ import annotations

import logging
import os
import socket
import zlib
from dataclasses import dataclass
from typing import Callable, Collection, Optional, Sequence

from ..contract.errors import RpctlError
from ..kernel import sockets as socks
from ..kernel.process import pidfd_exited
from ..kernel.server_root import read_stat
from ..read.views import MemberView

__all__ = ["COMMAND_VAR", "LAUNCHER_VAR", "MEMBER_VAR", "Orphan", "child_marks", "command_id", "find",
           "parse_environ"]

MEMBER_VAR = "RPCTL_MEMBER"            # the member's name: also for commands that want it
LAUNCHER_VAR = "RPCTL_LAUNCHER_PID"    # the pid of the launcher that started the child
COMMAND_VAR = "RPCTL_COMMAND_ID"       # command_id() of the child's command line

ENVIRON_LIMIT = 1 << 20  # bytes of /proc/PID/environ read at most (the kernel allows far less at exec)

log = logging.getLogger("rpctl.launcher")


def command_id(argv: Sequence[str]) -> str:
    """A short checksum of a command line: equal for the same arguments, in order.  It
    only tells a changed file's command from the old one (nobody forges it to gain
    anything: a child taken back is one rpctl started).  CRC-32, not hashlib: importing
    hashlib loads OpenSSL, 3.6 MiB more RSS in serve for nothing."""
    return f"{zlib.crc32(chr(0).join(argv).encode('utf-8', 'surrogateescape')):08x}"


def child_marks(name: str, argv: Sequence[str]) -> dict[str, str]:
    """What a launcher puts in each child's environment so that a later launcher can take it back."""
    return {MEMBER_VAR: name, LAUNCHER_VAR: str(os.getpid()), COMMAND_VAR: command_id(argv)}


def parse_environ(raw: bytes) -> dict[str, str]:
    """The variables of a /proc/PID/environ (NUL-separated NAME=VALUE); an entry
    that is not one is skipped, bytes that are not UTF-8 do not match ours."""
    env = {}
    for entry in raw.split(b"\0"):
        name, sep, value = entry.partition(b"=")
        if sep and name:
            env[name.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
    return env


@dataclass
class Orphan:
    """A live child of a dead launcher: its member, its process (a pidfd, ours
    to close or hand on), our copy of its socket, whether it runs our command."""

    member: MemberView
    pidfd: int
    sock: socket.socket
    same_command: bool

    @property
    def pid(self) -> int:
        return self.member.pid


def find(members: Sequence[MemberView], names: Collection[str],
         argv_of: Callable[[str], Sequence[str]]) -> dict[str, Orphan]:
    """The orphans among a group's `members` whose names are in `names`, by name;
    `argv_of(name)` is the command the launcher would start for that name."""
    found = {}
    for m in members:
        if m.name in names and not m.gone and m.pid > 0:
            orphan = _take_back(m, command_id(argv_of(m.name)))
            if orphan is not None:
                found[m.name] = orphan
    return found


def _take_back(member: MemberView, wanted_command: str) -> Optional[Orphan]:
    pid = member.pid
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return None  # gone since the group was read
    sock = None
    try:
        env = _environ(pid)
        launcher = env.get(LAUNCHER_VAR, "")
        if env.get(MEMBER_VAR) != member.name or not (launcher.isascii() and launcher.isdigit()):
            return None  # not started by a launcher as this member: someone else's
        stat = read_stat(pid)
        if stat is None or stat.ppid == int(launcher):
            return None  # its launcher lives: it is that launcher's
        sock, _ = socks.take_member_socket(pid, member.fd, f"take back {member.name}", cookie=member.cookie)
        if pidfd_exited(pidfd):
            return None  # exited while being read: the pid may be another's now
        orphan = Orphan(member, pidfd, sock, env.get(COMMAND_VAR) == wanted_command)
        sock = pidfd = None  # the orphan's now
        return orphan
    except (RpctlError, OSError) as e:
        log.info("%s (pid %d) not taken back: %s", member.name, pid, e)
        return None
    finally:
        if sock is not None:
            sock.close()
        if pidfd is not None:
            os.close(pidfd)


def _environ(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as f:
        return parse_environ(f.read(ENVIRON_LIMIT))
