"""Real sockets for kernel tests: member sockets held by the test process,
and clients that open connections (or send datagrams) from varied source
addresses and ports, so that the kernel's 4-tuple hash varies as it does
for real traffic.  Counts are what the member sockets actually received.
"""

from __future__ import annotations

import collections
import contextlib
import os
import random
import socket
import struct
import threading
import time
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

    def register_all(self, first: int = 0, count: int | None = None, weight: int = 1, prefix: str = "w",
                     options=None) -> str:
        """Register sockets first.. (count of them, default all) as PREFIX<position>
        through the library (the test process holds them), a new group made with
        `options` (a GroupOptions); returns the group's name."""
        from rpctl.controller.store import group

        name = ""
        last = len(self.socks) if count is None else first + count
        for i in range(first, last):
            name = group.register(f"{prefix}{i}", os.getpid(), self.socks[i].fileno(), weight=weight,
                                  options=options).group
        return name

    def drain_queues(self, counts: collections.Counter, peers: list | None = None) -> None:
        """Accept (or read) everything queued, counting by socket position;
        `peers` gets (position, client address) of each."""
        for i, s in enumerate(self.socks):
            if s.fileno() < 0:
                continue
            while True:
                try:
                    if self.proto == "tcp":
                        conn, peer = s.accept()
                        conn.close()
                    else:
                        _, peer = s.recvfrom(64)
                except (BlockingIOError, InterruptedError):
                    break
                counts[i] += 1
                if peers is not None:
                    peers.append((i, peer[:2]))

    def close(self) -> None:
        for s in self.socks:
            s.close()


@contextlib.contextmanager
def on_cpu(cpu: int):
    """Run this thread (and the threads it starts) on `cpu` only: on loopback
    the SYN is processed, and the program run, on the sending CPU."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def _source(rng: random.Random, family: int) -> str:
    if family == socket.AF_INET6:
        return "::1"
    return f"127.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"


_LINGER_RST = struct.pack("ii", 1, 0)


def tcp_connections(
    members: Members, count: int, seed: int = 1, batch: int = 500, peers: list | None = None, accept: bool = True
) -> tuple[collections.Counter, int]:
    """Open `count` connections; returns (accepted per member position, failures).
    `peers` gets (member position, client address) of each accepted one.
    accept=False leaves the accepting to the members' own workers (counts stay empty)."""
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
        if accept:
            members.drain_queues(counts, peers)
        for c in clients:
            c.close()
    if accept:
        members.drain_queues(counts, peers)
    return counts, failures


def tcp_sources(count: int, seed: int = 1) -> list[tuple[str, int]]:
    """`count` distinct client addresses (IPv4 loopback, fixed source port),
    so that the same connections can be opened again after a change."""
    rng = random.Random(seed)
    found: set[tuple[str, int]] = set()
    while len(found) < count:
        found.add((_source(rng, socket.AF_INET), rng.randrange(20000, 60000)))
    return sorted(found)


def tcp_placements(members: Members, sources: list[tuple[str, int]], batch: int = 500) -> dict[tuple[str, int], int]:
    """Connect once from each source; returns the member position that accepted it."""
    placed: dict[tuple[str, int], int] = {}
    for start in range(0, len(sources), batch):
        clients = []
        for src in sources[start:start + batch]:
            c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            c.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            # Reset on close: no side keeps the 4-tuple in TIME_WAIT, so the
            # same sources can connect again at once.
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
            c.bind(src)
            c.connect((members.host, members.port))
            clients.append(c)
        peers: list = []
        members.drain_queues(collections.Counter(), peers)
        for c in clients:
            c.close()
        placed.update((peer, i) for i, peer in peers)
    return placed


def udp_datagrams(
    members: Members, count: int, seed: int = 1, batch: int = 200, peers: list | None = None
) -> collections.Counter:
    """Send `count` datagrams, each from a fresh source; returns received per member position.
    `peers` gets (member position, sender address) of each."""
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
        members.drain_queues(counts, peers)
    members.drain_queues(counts, peers)
    return counts


def _tcp_counters() -> dict[str, int]:
    """This network namespace's Tcp and TcpExt counters, as "Tcp:OutRsts"."""
    found = {}
    for path in ("/proc/net/snmp", "/proc/net/netstat"):
        with open(path) as f:
            lines = [line.split() for line in f]
        for names, values in zip(lines[::2], lines[1::2]):
            if names[0] in ("Tcp:", "TcpExt:"):
                found.update((names[0] + n, int(v)) for n, v in zip(names[1:], values[1:]))
    return found


class ExtraRuns:
    """The program runs that TCP clients of this namespace caused beyond one
    per accepted connection, as the stack's own counters account for them:

    - a SYN a client sent again (TcpExt TCPSynRetrans) runs the program once
      more;
    - a segment that finds no socket of its connection goes to the listener
      lookup, runs the program, and is answered with a reset.  On a busy
      machine a client's last ACK can arrive after its own reset has closed
      the server's side.  tcp_connections closes every client with exactly
      one reset, so resets beyond one per client (Tcp OutRsts) are those
      answers.  (Seen: 14 extra runs in 20,000 connections, and 20,014
      resets.)

    Take one before the traffic; allowed(clients) after it."""

    def __init__(self) -> None:
        self._before = _tcp_counters()

    def allowed(self, clients: int) -> int:
        now = _tcp_counters()
        retransmitted = now["TcpExt:TCPSynRetrans"] - self._before["TcpExt:TCPSynRetrans"]
        answered = now["Tcp:OutRsts"] - self._before["Tcp:OutRsts"] - clients
        return retransmitted + max(0, answered)


def shares(counts: collections.Counter, n: int) -> list[float]:
    total = sum(counts.values()) or 1
    return [counts[i] / total for i in range(n)]


class _Background:
    """A thread running `_run` from the start of a `with` block to its end.

    The thread is started on entry, by the calling thread, so it lives in that
    thread's network namespace; `_run` returns once `stop` is set."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(10)


class LightLoad(_Background):
    """Batches of 40 connections every 0.25 s, until the block ends.
    `connected` and `failed` sum the batches."""

    def __init__(self, members: Members, batch: int = 40, pause: float = 0.25):
        super().__init__()
        self.members, self.batch, self.pause = members, batch, pause
        self.batches: list[tuple[int, int]] = []  # (connections accepted, failures) per batch

    def _run(self) -> None:
        n = 0
        while not self.stop.is_set():
            counts, failures = tcp_connections(self.members, self.batch, seed=n)
            self.batches.append((sum(counts.values()), failures))
            n += 1
            self.stop.wait(self.pause)

    @property
    def connected(self) -> int:
        return sum(c for c, _ in self.batches)

    @property
    def failed(self) -> int:
        return sum(f for _, f in self.batches)


class PacedConnections(_Background):
    """`rate` new connections a second to 127.0.0.1:port, each closed at once (it
    waits in the chosen member's accept queue like any other), until the block ends."""

    def __init__(self, port: int, rate: float):
        super().__init__()
        self.port, self.rate = port, rate
        self.made = 0
        self.failed = 0

    def _run(self) -> None:
        start = time.monotonic()
        while not self.stop.is_set():
            delay = start + self.made / self.rate - time.monotonic()
            if delay > 0:
                self.stop.wait(delay)
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2):
                    pass
            except OSError:
                self.failed += 1
            self.made += 1


class ClientLoad(_Background):
    """The load generator's clients (one HTTP request per connection, from
    varied sources) until the block ends; `tally` is their outcome."""

    def __init__(self, port: int = PORT, concurrency: int = 8, rate: float | None = None):
        from rpctl.cli.demo import loadgen

        super().__init__()
        self.port, self.concurrency, self.rate = port, concurrency, rate
        self.tally: loadgen.Tally | None = None

    def _run(self) -> None:
        from rpctl.cli.demo import loadgen

        self.tally = loadgen.run_tcp("127.0.0.1", self.port, concurrency=self.concurrency, rate=self.rate,
                                     stop=self.stop)



class UdpFlows:
    """`count` UDP client sockets bound to fixed, distinct source addresses
    and ports: the same 4-tuples every round, as long-lived flows (a game
    session, a QUIC connection) keep them.  Closed by close()."""

    def __init__(self, members: Members, count: int, seed: int = 1):
        self.members = members
        rng = random.Random(seed)
        self.socks: list[socket.socket] = []
        while len(self.socks) < count:
            c = socket.socket(members.family, socket.SOCK_DGRAM)
            try:
                c.bind((_source(rng, members.family), rng.randrange(20000, 60000)))
            except OSError:  # that source is taken (IPv6 has one address): another one
                c.close()
                continue
            self.socks.append(c)

    @property
    def sources(self) -> list[tuple[str, int]]:
        return [c.getsockname()[:2] for c in self.socks]

    def placements(self, batch: int = 200) -> dict[tuple[str, int], int]:
        """One datagram from every flow; returns the member position each reached.
        Fails when a datagram reached no member."""
        placed: dict[tuple[str, int], int] = {}
        for start in range(0, len(self.socks), batch):
            for c in self.socks[start:start + batch]:
                c.sendto(b"x", (self.members.host, self.members.port))
            peers: list = []
            self.members.drain_queues(collections.Counter(), peers)
            placed.update((peer, i) for i, peer in peers)
        missing = set(self.sources) - set(placed)
        assert not missing, f"{len(missing)} of {len(self.socks)} flows reached no member"
        return placed

    def close(self) -> None:
        for c in self.socks:
            c.close()


def moved(before: dict, after: dict) -> int:
    """Flows placed on another member in `after` than in `before`."""
    return sum(1 for flow, member in before.items() if after.get(flow) != member)


def read_request_head(conn: socket.socket, timeout: float) -> bytes:
    """What a client sent up to the end of its request head (less if it closed first)."""
    conn.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data
