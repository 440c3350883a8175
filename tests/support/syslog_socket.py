"""A syslog socket of the test's own: a real AF_UNIX datagram socket bound in a
temporary folder, where rpctl's audit lines (controller/kernel/system_log.py)
are sent instead of /dev/log, and read back."""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass

# What system_log.send writes: <PRI>Mmm dd hh:mm:ss IDENT[PID]: MESSAGE
DATAGRAM_RE = re.compile(r"^<(\d+)>(\w{3} [ \d]\d \d\d:\d\d:\d\d) (\S+)\[(\d+)\]: (.*)$", re.S)
# logfmt: key=value or key="value with \" escapes"
FIELD_RE = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')


def logfmt_fields(text: str) -> dict[str, str]:
    """An audit line's key=value pairs, quotes and escapes undone."""
    out = {}
    for key, value in FIELD_RE.findall(text):
        if value.startswith('"'):
            value = re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), value[1:-1])
        out[key] = value
    return out


@dataclass(frozen=True)
class Entry:
    """One datagram received: its priority, identifier, pid and message."""

    priority: int
    ident: str
    pid: int
    message: str

    @property
    def fields(self) -> dict[str, str]:
        return logfmt_fields(self.message)


class SyslogSocket:
    """Bound at `path` until close(); entries() returns what arrived since the last call."""

    def __init__(self, path: str):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.setblocking(False)

    @classmethod
    def instead_of_dev_log(cls, folder, monkeypatch) -> "SyslogSocket":
        """One bound in `folder`, where rpctl sends its lines for the rest of the test."""
        from rpctl.controller.kernel import system_log

        sock = cls(os.path.join(str(folder), "log"))
        monkeypatch.setattr(system_log, "SOCKET", sock.path)
        return sock

    def entries(self) -> list[Entry]:
        out = []
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return out
            m = DATAGRAM_RE.match(data.decode())
            assert m, f"not a syslog datagram: {data!r}"
            out.append(Entry(int(m.group(1)), m.group(3), int(m.group(4)), m.group(5)))

    def changes(self) -> list[tuple[str, str]]:
        """(group, change) of every entry since the last call."""
        return [(e.fields["group"], e.fields["change"]) for e in self.entries()]

    def close(self) -> None:
        self.sock.close()
        if os.path.exists(self.path):
            os.unlink(self.path)
