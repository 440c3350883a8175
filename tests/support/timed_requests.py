"""HTTP requests to one port, each one noted with when it started and which
process answered: what a deploy test (or benchmark) reads back as "from when
on did every new connection reach the new server".  The servers answer with
their pid (tests/support/nginx.py).  Plain module (no pytest), for bench/ too.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field

FAILED = 0  # the pid noted for a request that got no reply


@dataclass
class TimedRequests:
    """`concurrency` threads sending one request per connection to 127.0.0.1:port
    until stop(); `done` holds (monotonic start, pid or FAILED) of every request."""

    port: int
    concurrency: int = 4
    pause: float = 0.0
    done: list[tuple[float, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.halt = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(self.concurrency)]

    def __enter__(self) -> "TimedRequests":
        for t in self.threads:  # started by the caller's thread: its network namespace
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self.halt.set()
        for t in self.threads:
            t.join(10)

    def _one(self) -> int:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
                s.sendall(b"GET / HTTP/1.0\r\n\r\n")
                reply = b""
                while chunk := s.recv(4096):
                    reply += chunk
            return int(reply.rsplit(b"\r\n\r\n", 1)[1].strip())
        except (OSError, ValueError, IndexError):
            return FAILED

    def _run(self) -> None:
        while not self.halt.is_set():
            start = time.monotonic()
            pid = self._one()
            with self.lock:
                self.done.append((start, pid))
            if self.pause:
                self.halt.wait(self.pause)

    def since(self, t: float) -> list[int]:
        """The pids (FAILED for failures) of the requests started at or after monotonic time t."""
        with self.lock:
            return [pid for start, pid in self.done if start >= t]

    @property
    def failed(self) -> int:
        with self.lock:
            return sum(1 for _, pid in self.done if pid == FAILED)


class NewListener:
    """Notes the moment a TCP listener of `port` more than there are now appears
    (sock_diag polled every 2 ms from a thread): `appeared`, monotonic, once seen."""

    def __init__(self, port: int):
        self.port = port
        self.before = self._count()
        self.appeared: float | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _count(self) -> int:
        from rpctl.controller.kernel import diag

        return len(diag.listeners(socket.IPPROTO_TCP, port=self.port))

    def _run(self) -> None:
        deadline = time.monotonic() + 30
        while self._count() <= self.before and time.monotonic() < deadline:
            time.sleep(0.002)
        self.appeared = time.monotonic()

    def __enter__(self) -> "NewListener":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.thread.join(30)
