"""A CPU-bound server for bench/adaptive.py: one connection at a time.

Accepts from the listening socket at fd $BENCH_FD (3 by default: what
`rpctl run` and `rpctl serve` pass), reads the request line, spends
$BENCH_WORK_MS milliseconds of CPU on it (ten times that for a request that
starts with "L"), answers "ok" and closes.  Single-threaded on purpose: a
stopped worker (SIGSTOP) or a long request holds up its whole accept queue,
as a GC pause or a slow request does in a single-threaded event loop.
Stdlib only, so that anything can exec it.
"""

from __future__ import annotations

import os
import socket
import time

LONG = 10  # a long request costs this many short ones


def burn(seconds: float) -> None:
    """Spend `seconds` of this thread's CPU time (not wall time: a descheduled worker is slower)."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def main() -> None:
    sock = socket.socket(fileno=int(os.environ.get("BENCH_FD", "3")))
    work = float(os.environ.get("BENCH_WORK_MS", "1")) / 1000
    while True:
        conn, _ = sock.accept()
        with conn:
            try:
                request = conn.recv(64)
                burn(work * (LONG if request.startswith(b"L") else 1))
                conn.sendall(b"ok\n")
            except OSError:
                pass  # the client gave up: next one


if __name__ == "__main__":
    main()
