"""The system log: one line per change of steering, who made it, through /dev/log.

An operator who finds a worker drained or a canary at 25 % asks the system
log who did it, and what it was before.  Every write of the store that
changes steering sends one line here (controller/store/audit.py words it),
with the syslog identifier "rpctl", so that `journalctl -t rpctl` (or
/var/log/syslog) lists them all:

    group=web change="nginx-1 weight 1 -> 3" uid=0 user=root pid=4242 command="rpctl weights nginx-1=3" netns=netns4097

"Who" is this process: its uid and user name, its pid, and the command it
runs, which the command line (or serve, as "serve") sets once at its start
(set_command); a program that never sets it is named by its own argv.  A
login uid other than the uid (root through sudo) is added as login=NAME.

The line goes as one datagram to the syslog socket, in the form journald,
rsyslog and syslog-ng all read (`<PRI>TIMESTAMP rpctl[PID]: MESSAGE`,
facility user, severity notice, as logger(1) sends).  When there is no
socket (a container without a syslog daemon), or it does not answer, the
line is dropped without a word: the change itself is done, and must not
fail for want of a logger.
"""

from __future__ import annotations

import errno
import os
import shlex
import socket
import sys
import time
from dataclasses import dataclass
from typing import Optional

__all__ = ["IDENT", "SOCKET", "Actor", "actor", "line", "logfmt", "send", "set_command"]

SOCKET = "/dev/log"
IDENT = "rpctl"
PRIORITY = 1 * 8 + 5          # facility user (1), severity notice (5)
MAX_CHANGE = 7000             # characters of a change: rsyslog's default limit is 8 KiB a message
CUT = " ... (cut)"
NO_LOGIN_UID = 0xFFFFFFFF     # /proc/self/loginuid of a process outside any login session
SEND_TIMEOUT = 1.0            # seconds a line may wait for a busy syslog daemon before it is dropped

_command: Optional[str] = None


def set_command(command: Optional[str]) -> None:
    """Name what this process runs, for every line it logs from now on: the
    command line (`rpctl weights web-1=3`) or "serve"; None: its argv."""
    global _command
    _command = command


@dataclass(frozen=True)
class Actor:
    """Who changes steering: this process."""

    uid: int
    user: str
    pid: int
    command: str
    login: str = ""  # the login user, when it is not the uid's (sudo)

    def fields(self) -> list[tuple[str, str]]:
        out = [("uid", str(self.uid)), ("user", self.user), ("pid", str(self.pid)), ("command", self.command)]
        return out + [("login", self.login)] if self.login else out


def _user_name(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _login_uid() -> Optional[int]:
    try:
        with open("/proc/self/loginuid") as f:
            value = int(f.read().strip())
    except (OSError, ValueError):
        return None
    return None if value == NO_LOGIN_UID else value


def actor() -> Actor:
    """This process, as a line names it."""
    uid = os.getuid()
    command = _command if _command is not None else shlex.join(sys.argv) or "python"
    login = _login_uid()
    return Actor(uid, _user_name(uid), os.getpid(), command,
                 _user_name(login) if login is not None and login != uid else "")


def logfmt(fields: list[tuple[str, str]]) -> str:
    """key=value pairs, a value quoted when it holds a space, a quote, '=' or nothing."""
    out = []
    for key, value in fields:
        if not value or any(c in value for c in ' "=\\\n'):
            value = '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
        out.append(f"{key}={value}")
    return " ".join(out)


def line(group: str, change: str, netns: str = "", who: Optional[Actor] = None) -> str:
    """The message of one change: the group, what changed, who changed it, the namespace."""
    if len(change) > MAX_CHANGE:
        change = change[: MAX_CHANGE - len(CUT)] + CUT
    fields = [("group", group), ("change", change), *(who or actor()).fields()]
    return logfmt(fields + [("netns", netns)] if netns else fields)


def send(message: str, path: Optional[str] = None) -> bool:
    """Send one message to the syslog socket (SOCKET); False when there is none
    or it refused it, which is not an error."""
    stamp = time.strftime("%b %d %H:%M:%S", time.localtime())
    data = f"<{PRIORITY}>{stamp} {IDENT}[{os.getpid()}]: {message}".encode(errors="replace")
    path = path or SOCKET
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            # A daemon that stopped reading fills its queue: wait a little, never forever.
            s.settimeout(SEND_TIMEOUT)
            s.sendto(data, path)
        return True
    except OSError as e:
        if e.errno != errno.EPROTOTYPE:
            return False  # no socket, nobody listening, or the daemon's queue stayed full
    # A syslog daemon with a stream socket (some syslog-ng setups): one message, newline-ended.
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(SEND_TIMEOUT)
            s.connect(path)
            s.sendall(data + b"\n")
        return True
    except OSError:
        return False
