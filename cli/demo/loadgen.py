"""Load generator for the demo workers: who answered, and what failed.

Every demo worker (``rpctl.cli.demo.worker``) answers with its name, so the
load generator only has to count names to show how the members of a
SO_REUSEPORT group share the load, and count failures by kind to show what
a drain or a weight change cost: a reset or refused connection during a
drain is exactly what rpctl exists to prevent.

The kernel picks a group member from a hash of the 4-tuple (and rpctl's BPF
program uses the same hash).  Loopback traffic from one address to one port
varies only in the client's ephemeral port, so by default each connection
is bound to a pseudo-random source address in 127.0.0.0/8 as well: the hash
then spreads like real traffic from many clients.

Library use::

    tally = run_tcp("127.0.0.1", 8080, count=1000)
    tally.shares()   # {"w1": 0.51, "w2": 0.49}

Command line::

    python -m rpctl.cli.demo.loadgen --target 127.0.0.1:8080 --duration 5
"""

from __future__ import annotations

import argparse
import collections
import ipaddress
import itertools
import json
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from .worker import parse_hostport

__all__ = [
    "Tally",
    "BadReply",
    "FAILURE_KINDS",
    "loopback_source",
    "classify",
    "parse_reply",
    "run_tcp",
    "run_udp",
    "main",
]

FAILURE_KINDS = ("refused", "reset", "timeout", "other")
REQUEST = b"GET / HTTP/1.0\r\nHost: x\r\nConnection: close\r\n\r\n"
DATAGRAM = b"who\n"
MAX_REPLY = 65536  # a demo reply is a few dozen bytes; more means the target is not a demo worker

# Bind to an address but let connect() pick the port: the port is then chosen
# per 4-tuple instead of per local address, which keeps ephemeral ports from
# running out at thousands of connections per second.
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


@dataclass
class Tally:
    """Outcome of a run: replies per server name and failures per kind.

    ``sent`` counts attempts (connections or datagrams), so
    ``total_ok() + sum(failures.values()) == sent`` once a run is over.
    ``elapsed`` is the wall time of the run in seconds.
    """

    by_name: collections.Counter = field(default_factory=collections.Counter)
    failures: collections.Counter = field(default_factory=collections.Counter)
    sent: int = 0
    elapsed: float = 0.0

    def total_ok(self) -> int:
        return sum(self.by_name.values())

    def shares(self) -> dict[str, float]:
        """Each name's fraction of the successful replies (empty if there were none)."""
        ok = self.total_ok()
        return {name: n / ok for name, n in sorted(self.by_name.items())} if ok else {}

    def rate(self) -> float:
        """Successful replies per second over the run."""
        return self.total_ok() / self.elapsed if self.elapsed > 0 else 0.0

    def merge(self, other: Tally) -> None:
        self.by_name.update(other.by_name)
        self.failures.update(other.failures)
        self.sent += other.sent

    def to_dict(self) -> dict:
        return {
            "sent": self.sent,
            "ok": self.total_ok(),
            "by_name": dict(sorted(self.by_name.items())),
            "failures": {k: self.failures[k] for k in FAILURE_KINDS if self.failures[k]},
            "shares": {k: round(v, 4) for k, v in self.shares().items()},
            "elapsed": round(self.elapsed, 3),
            "per_second": round(self.rate(), 1),
        }


class BadReply(ValueError):
    """The peer answered, but not like a demo worker."""


def loopback_source(n: int, seed: int = 0) -> str:
    """The n-th pseudo-random source address in 127.0.0.0/8, as 127.x.y.z with z not 0/255.

    A pure function of (n, seed), so runs are reproducible: a 32-bit mixer
    (the murmur3 finaliser) turns consecutive counters into well-spread
    addresses, which matters because the kernel's reuseport hash would see
    little variety in 127.0.0.1, 127.0.0.2, ...
    """
    x = (n * 0x9E3779B1 + seed * 0x85EBCA77 + 0x27D4EB2F) & 0xFFFFFFFF
    x ^= x >> 16
    x = (x * 0x85EBCA6B) & 0xFFFFFFFF
    x ^= x >> 13
    x = (x * 0xC2B2AE35) & 0xFFFFFFFF
    x ^= x >> 16
    z = 1 + (x & 0xFF) % 254
    return f"127.{(x >> 16) & 0xFF}.{(x >> 8) & 0xFF}.{z}"


def classify(exc: BaseException) -> str:
    """Map an exception from one attempt to a failure kind in FAILURE_KINDS."""
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
        return "reset"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timeout"
    return "other"


def parse_reply(data: bytes) -> str:
    """The server name in a demo worker's HTTP reply: the first line of the body."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        raise BadReply(f"no complete HTTP head in {len(data)} bytes")
    status = head.split(b"\r\n", 1)[0].split()
    if len(status) < 2 or not status[0].startswith(b"HTTP/") or status[1] != b"200":
        raise BadReply(f"unexpected status line {head[:80]!r}")
    name = body.split(b"\n", 1)[0].strip()
    if not name:
        raise BadReply("empty body")
    return name.decode("utf-8", "replace")


def _target(host: str, port: int) -> tuple[int, tuple, bool]:
    """Family, socket address and whether the target is IPv4 loopback."""
    addr = ipaddress.ip_address(host)
    if addr.version == 6:
        return socket.AF_INET6, (host, port, 0, 0), False
    return socket.AF_INET, (host, port), addr.is_loopback


def _check_sources(sources: str) -> None:
    if sources not in ("varied", "fixed"):
        raise ValueError(f"sources must be 'varied' or 'fixed', not {sources!r}")


def _tcp_once(family: int, addr: tuple, source: str | None, timeout: float) -> str:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        if source is not None:
            sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((source, 0))
        sock.connect(addr)
        sock.sendall(REQUEST)
        chunks = []
        size = 0
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_REPLY:
                raise BadReply("reply too long")
    finally:
        sock.close()
    return parse_reply(b"".join(chunks))


def _udp_once(family: int, addr: tuple, source: str | None, timeout: float) -> str:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.settimeout(timeout)
        if source is not None:
            sock.bind((source, 0))
        # A connected UDP socket takes replies from the target only and sees an
        # ICMP port unreachable as ConnectionRefusedError instead of a timeout.
        sock.connect(addr)
        sock.send(DATAGRAM)
        data = sock.recv(2048)
    finally:
        sock.close()
    name = data.split(b"\n", 1)[0].strip()
    if not name:
        raise BadReply("empty datagram")
    return name.decode("utf-8", "replace")


def _run(
    once: Callable[[int, tuple, str | None, float], str],
    host: str,
    port: int,
    count: int | None,
    duration: float | None,
    concurrency: int,
    sources: str,
    timeout: float,
    rate: float | None,
    stop: threading.Event | None,
) -> Tally:
    """Drive ``once`` from ``concurrency`` threads until count, duration or stop.

    Attempts are numbered from one shared counter (``next()`` on an
    itertools.count is atomic under the GIL), which gives the count limit,
    the rate schedule (attempt i is due at start + i/rate) and the source
    address without a lock on the hot path.  Each thread keeps its own Tally;
    they are merged at the end.
    """
    _check_sources(sources)
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    if count is None and duration is None and stop is None:
        raise ValueError("give count, duration or stop: the run would never end")
    if rate is not None and rate <= 0:
        raise ValueError("rate must be positive")
    family, addr, v4_loopback = _target(host, port)
    vary = sources == "varied" and v4_loopback
    seed = port
    tickets = itertools.count()
    # Our own event, so that stopping on a bug does not set the caller's.
    halt = threading.Event()
    pause = stop if stop is not None else halt  # what a rate-limited thread sleeps on

    def stopped() -> bool:
        return halt.is_set() or (stop is not None and stop.is_set())

    start = time.monotonic()
    deadline = start + duration if duration is not None else None
    tallies = [Tally() for _ in range(concurrency)]
    errors: list[BaseException] = []

    def worker(tally: Tally) -> None:
        try:
            while not stopped():
                n = next(tickets)
                if count is not None and n >= count:
                    return
                if rate is not None:
                    wait = start + n / rate - time.monotonic()
                    if deadline is not None:
                        wait = min(wait, deadline - time.monotonic())
                    if wait > 0 and (pause.wait(wait) or stopped()):
                        return
                if deadline is not None and time.monotonic() >= deadline:
                    return
                tally.sent += 1
                try:
                    name = once(family, addr, loopback_source(n, seed) if vary else None, timeout)
                except (OSError, BadReply) as exc:
                    tally.failures[classify(exc)] += 1
                else:
                    tally.by_name[name] += 1
        except BaseException as exc:  # a bug, not a network failure: re-raised by the caller
            errors.append(exc)
            halt.set()

    threads = [
        threading.Thread(target=worker, args=(t,), name=f"loadgen-{i}", daemon=True)
        for i, t in enumerate(tallies)
    ]
    for t in threads:
        t.start()
    try:
        for t in threads:
            t.join()
    except KeyboardInterrupt:
        halt.set()
        for t in threads:
            t.join()
        raise
    total = Tally(elapsed=time.monotonic() - start)
    for t in tallies:
        total.merge(t)
    if errors:
        raise errors[0]
    return total


def run_tcp(
    host: str,
    port: int,
    count: int | None = None,
    duration: float | None = None,
    concurrency: int = 8,
    sources: str = "varied",
    timeout: float = 3.0,
    rate: float | None = None,
    stop: threading.Event | None = None,
) -> Tally:
    """Open connections to host:port, one HTTP request each, and tally who answered.

    Stops after ``count`` connections, after ``duration`` seconds or when
    ``stop`` is set, whichever comes first; ``rate`` caps connections per
    second over all threads.  ``sources="varied"`` binds each connection to a
    pseudo-random 127.x.y.z (IPv4 loopback targets only; for ::1 the kernel's
    ephemeral port is what varies), ``"fixed"`` leaves the source to the kernel.
    """
    return _run(_tcp_once, host, port, count, duration, concurrency, sources, timeout, rate, stop)


def run_udp(
    host: str,
    port: int,
    count: int,
    concurrency: int = 4,
    sources: str = "varied",
    timeout: float = 1.0,
) -> Tally:
    """Send ``count`` datagrams, each from a fresh socket, and tally who answered.

    A fresh socket per datagram gives each one its own 4-tuple, as a fresh
    connection does for TCP; a reply that does not come within ``timeout``
    counts as "timeout" (there is no retransmission).
    """
    return _run(_udp_once, host, port, count, None, concurrency, sources, timeout, None, None)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m rpctl.cli.demo.loadgen",
        description="Load a demo worker group and print who answered as JSON.",
    )
    p.add_argument("--target", required=True, metavar="HOST:PORT", help="e.g. 127.0.0.1:8080 or [::1]:8080")
    p.add_argument("--proto", choices=("tcp", "udp"), default="tcp")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--count", type=int, help="connections/datagrams to make (default 1000)")
    g.add_argument("--duration", type=float, metavar="S", help="run this many seconds (TCP only)")
    p.add_argument("--concurrency", type=int, default=None, help="threads (default 8 for TCP, 4 for UDP)")
    p.add_argument("--sources", choices=("varied", "fixed"), default="varied")
    p.add_argument("--timeout", type=float, default=None, help="seconds per operation")
    p.add_argument("--rate", type=float, default=None, help="cap on connections per second (TCP only)")
    args = p.parse_args(argv)
    try:
        args.host, args.port = parse_hostport(args.target)
    except ValueError as exc:
        p.error(str(exc))
    if args.proto == "udp" and (args.duration is not None or args.rate is not None):
        p.error("--duration and --rate are for TCP only")
    if args.count is None and args.duration is None:
        args.count = 1000
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        if args.proto == "tcp":
            tally = run_tcp(
                args.host,
                args.port,
                count=args.count,
                duration=args.duration,
                concurrency=args.concurrency or 8,
                sources=args.sources,
                timeout=args.timeout if args.timeout is not None else 3.0,
                rate=args.rate,
            )
        else:
            tally = run_udp(
                args.host,
                args.port,
                count=args.count,
                concurrency=args.concurrency or 4,
                sources=args.sources,
                timeout=args.timeout if args.timeout is not None else 1.0,
            )
    except ValueError as exc:
        print(f"loadgen: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    json.dump(tally.to_dict(), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
