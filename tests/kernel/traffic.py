"""Real sockets for kernel tests: member sockets held by the test process,
and clients that open connections (or send datagrams) from varied source
addresses and ports, so that the kernel's 4-tuple hash varies as it does
for real traffic.  Counts are what the member sockets actually received.
"""

from __future__ import annotations

import collections
import os
import random
import socket
import struct
from dataclasses import dataclass, field

PORT = 7000
SO_RCVBUFFORCE = 33


@dataclass
class Members:
    """SO_REUSEPORT sockets of one port, held (and served) by the test."""

    proto: str = "tcp"
    family: int = socket.AF_INET
    port: int = PORT
    socks: list = field(default_factory=list)

    @property
    def host(self) -> str:
        return "::1" if self.family == socket.AF_INET6 else "127.0.0.1"

    def add(self, reuseport: bool = True, port: int | None = None) -> socket.socket:
        kind = socket.SOCK_STREAM if self.proto == "tcp" else socket.SOCK_DGRAM
        s = socket.socket(self.family, kind)
        if reuseport:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind((self.host, self.port if port is None else port))
        if self.proto == "tcp":
            s.listen(4096)
        else:
            s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)
        s.setblocking(False)
        self.socks.append(s)
        return s

    def register_args(self, name: str, sock: socket.socket, weight: int = 1) -> list:
        return ["register", name, "--pid", os.getpid(), "--fd", sock.fileno(), "--weight", weight]

    def drain_queues(self, counts: collections.Counter) -> None:
        """Accept (or read) everything queued, counting by socket position."""
        for i, s in enumerate(self.socks):
            if s.fileno() < 0:
                continue
            while True:
                try:
                    if self.proto == "tcp":
                        conn, _ = s.accept()
                        conn.close()
                    else:
                        s.recv(64)
                except (BlockingIOError, InterruptedError):
                    break
                counts[i] += 1

    def close(self) -> None:
        for s in self.socks:
            s.close()


def _source(rng: random.Random, family: int) -> str:
    if family == socket.AF_INET6:
        return "::1"
    return f"127.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"


_LINGER_RST = struct.pack("ii", 1, 0)


def tcp_connections(members: Members, count: int, seed: int = 1, batch: int = 500) -> tuple[collections.Counter, int]:
    """Open `count` connections; returns (accepted per member position, failures)."""
    rng = random.Random(seed)
    counts: collections.Counter = collections.Counter()
    failures = 0
    done = 0
    while done < count:
        clients = []
        for _ in range(min(batch, count - done)):
            c = socket.socket(members.family, socket.SOCK_STREAM)
            # Reset on close: no TIME_WAIT piles up over thousands of clients.
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
            c.settimeout(5)
            try:
                c.bind((_source(rng, members.family), 0))
                c.connect((members.host, members.port))
            except OSError:
                failures += 1
                c.close()
                continue
            clients.append(c)
        done += min(batch, count - done)
        members.drain_queues(counts)
        for c in clients:
            c.close()
    members.drain_queues(counts)
    return counts, failures


def udp_datagrams(members: Members, count: int, seed: int = 1, batch: int = 200) -> collections.Counter:
    """Send `count` datagrams, each from a fresh source; returns received per member position."""
    rng = random.Random(seed)
    counts: collections.Counter = collections.Counter()
    done = 0
    while done < count:
        for _ in range(min(batch, count - done)):
            c = socket.socket(members.family, socket.SOCK_DGRAM)
            c.bind((_source(rng, members.family), 0))
            c.sendto(b"x", (members.host, members.port))
            c.close()
        done += min(batch, count - done)
        members.drain_queues(counts)
    members.drain_queues(counts)
    return counts


def syn_retransmits() -> int:
    """SYNs the clients of this network namespace sent again (TcpExt
    TCPSynRetrans): each one runs the program once more."""
    with open("/proc/net/netstat") as f:
        lines = [line.split() for line in f if line.startswith("TcpExt:")]
    names, values = lines[0], lines[1]
    return int(values[names.index("TCPSynRetrans")])


def shares(counts: collections.Counter, n: int) -> list[float]:
    total = sum(counts.values()) or 1
    return [counts[i] / total for i in range(n)]
