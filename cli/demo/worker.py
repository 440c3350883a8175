"""The demo worker: a tiny real server that says its own name.

``rpctl demo`` runs four of these on one SO_REUSEPORT port and the tests run
two: because every reply carries the worker's name, a load generator can see
exactly which member of the reuseport group the kernel (or rpctl's BPF
program) picked for each connection or datagram.

The module is stdlib-only on purpose so that anything can exec it (systemd,
a shell script, a test) without rpctl's dependencies being importable.  Run
it as ``rpctl demo-worker --name w1 --listen 127.0.0.1:8080`` (or ``python -m
rpctl.cli.demo.worker ...``, which imports nothing of the command line).

Protocol:

* TCP: a minimal HTTP/1.0/1.1 server.  It reads the request head, answers
  ``200 OK`` with the body ``<NAME>\\n`` and closes.  One thread and a
  selectors (epoll) loop: a thread per connection would cap out far below the
  several thousand connections per second a steering demo needs.
* UDP: every datagram is answered with ``<NAME>\\n`` to its sender.

On start it prints exactly one line, ``ready pid=<pid> fd=<fd> port=<port>``:
the fd number lets a controller take the listening socket with
``pidfd_getfd(2)`` and put it in its REUSEPORT_SOCKARRAY map.  Nothing else
goes to stdout, so a parent can read that line and then ignore the pipe.

SIGTERM/SIGINT: accept what is already queued, close the listening socket,
finish in-flight connections for at most 2 s and exit 0.  With --close-first
the listener is closed at once, its queue unaccepted, as nginx's graceful
shutdown and Go's http.Server.Shutdown do (benchmarks use it to show what a
closing listener loses).
"""

from __future__ import annotations

import argparse
import errno
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

from rpctl.controller.kernel.sockets import (
    PROTO_NAMES,
    SelfPipe,
    endpoint_text,
    family_of,
    parse_hostport,
    reuseport_socket,
)

__all__ = [
    "Ready",
    "parse_hostport",
    "parse_ready",
    "command",
    "wait_ready",
    "spawn",
    "stop",
    "add_arguments",
    "serve",
    "main",
]

SD_LISTEN_FDS_START = 3
LISTEN_BACKLOG = 4096
IDLE_TIMEOUT = 5.0  # a connection that sends nothing for this long is closed
DRAIN_TIMEOUT = 2.0  # bound on finishing in-flight connections after SIGTERM
MAX_HEAD = 16384  # a request head larger than this is not a demo client: drop it
ACCEPT_BATCH = 512  # accepts per readiness event, so reads are not starved
SWEEP_INTERVAL = 0.5  # how often idle connections are looked for


# --------------------------------------------------------------------------
# Helpers shared with the load generator, the demo and the tests.
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Ready:
    """What a worker announced in its ``ready`` line."""

    pid: int
    fd: int
    port: int


def parse_ready(line: str) -> Ready:
    """Parse ``ready pid=<pid> fd=<fd> port=<port>``; ValueError if it is not one."""
    words = line.split()
    if not words or words[0] != "ready":
        raise ValueError(f"not a ready line: {line!r}")
    fields = dict(w.split("=", 1) for w in words[1:] if "=" in w)
    try:
        return Ready(pid=int(fields["pid"]), fd=int(fields["fd"]), port=int(fields["port"]))
    except (KeyError, ValueError):
        raise ValueError(f"malformed ready line: {line!r}") from None


def command(
    name: str,
    listen: str | None = None,
    proto: str | None = None,
    accept_delay_ms: float | None = None,
    python: str | None = None,
    close_first: bool = False,
) -> list[str]:
    """The argv that runs one worker with this interpreter (or ``python``)."""
    argv = [python or sys.executable, "-m", "rpctl.cli.demo.worker", "--name", name]
    if listen is not None:
        argv += ["--listen", listen]
    if proto is not None:
        argv += ["--proto", proto]
    if accept_delay_ms is not None:
        argv += ["--accept-delay", str(accept_delay_ms)]
    if close_first:
        argv.append("--close-first")
    return argv


def wait_ready(proc: subprocess.Popen, timeout: float = 10.0) -> Ready:
    """Read the worker's ``ready`` line from its stdout pipe.

    Reads raw bytes from the fd with a deadline rather than ``readline()``:
    a worker that hangs or dies before it is ready must fail the caller, not
    block it forever.  The pipe must be binary (the default for Popen).
    """
    if proc.stdout is None:
        raise ValueError("the worker must be started with stdout=subprocess.PIPE")
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    buf = b""
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"worker pid {proc.pid} not ready after {timeout:.1f}s")
            if not sel.select(left):
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                rc = proc.wait(timeout=1.0)
                raise RuntimeError(f"worker pid {proc.pid} exited (rc={rc}) before it was ready")
            buf += chunk
    return parse_ready(buf.split(b"\n", 1)[0].decode("ascii", "replace"))


def spawn(
    name: str,
    listen: str,
    proto: str = "tcp",
    accept_delay_ms: float | None = None,
    timeout: float = 10.0,
    close_first: bool = False,
    **popen_kwargs,
) -> tuple[subprocess.Popen, Ready]:
    """Start one worker and wait until it is ready; it is killed if it never is."""
    argv = command(name, listen=listen, proto=proto, accept_delay_ms=accept_delay_ms, close_first=close_first)
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, **popen_kwargs)
    try:
        return proc, wait_ready(proc, timeout)
    except BaseException:
        stop(proc, timeout=0)
        raise


def stop(proc: subprocess.Popen, timeout: float = 3.0) -> int:
    """SIGTERM a worker, SIGKILL it if it outlives ``timeout``; returns its exit code.

    Also closes the stdout pipe so that no file object is left for the
    garbage collector to warn about.
    """
    try:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    finally:
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
    return proc.returncode


# --------------------------------------------------------------------------
# The server.
# --------------------------------------------------------------------------


def activated_socket() -> socket.socket | None:
    """The socket systemd (or a test posing as it) passed as fd 3, if any.

    Same rule as sd_listen_fds(3): the variables count only when LISTEN_PID
    names this very process, since they may be inherited by accident.  They
    are removed so that nothing this process might start inherits them.
    """
    pid = os.environ.get("LISTEN_PID", "")
    fds = os.environ.get("LISTEN_FDS", "")
    for var in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(var, None)
    try:
        if int(pid) != os.getpid() or int(fds) < 1:
            return None
    except ValueError:
        return None
    # socket.socket(fileno=...) asks the kernel for family, type and protocol.
    return socket.socket(fileno=SD_LISTEN_FDS_START)


class _Conn:
    """One accepted TCP connection: what it sent so far, what is left to send."""

    __slots__ = ("sock", "head", "out", "deadline", "watched")

    def __init__(self, sock: socket.socket, deadline: float):
        self.sock = sock
        self.head = b""
        self.out = b""
        self.deadline = deadline
        self.watched = 0  # the selector events registered for it, 0 if none


class Worker:
    """The event loop of one worker; ``run()`` returns the process exit code."""

    def __init__(self, name: str, sock: socket.socket, accept_delay: float = 0.0, close_first: bool = False):
        self.name = name
        self.close_first = close_first
        self.sock = sock
        self.tcp = sock.type == socket.SOCK_STREAM
        self.accept_delay = accept_delay
        body = f"{name}\n".encode()
        self.http_reply = (
            b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body
        )
        self.udp_reply = body
        self.served = 0
        self.stopping = False
        self.conns: dict[int, _Conn] = {}
        self.sel = selectors.DefaultSelector()
        # Signals wake the selector through this pair: a Python handler alone
        # would only run after select() returned on its own (PEP 475 retries).
        self.wake = SelfPipe()

    # ---- setup / teardown

    def _install_signals(self) -> None:
        def on_signal(signum, frame):
            self.stopping = True

        signal.set_wakeup_fd(self.wake.writer.fileno(), warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    def close(self) -> None:
        signal.set_wakeup_fd(-1)
        for conn in list(self.conns.values()):
            self._close(conn)
        if self.sock.fileno() != -1:
            self.sock.close()
        self.sel.close()
        self.wake.close()

    def announce(self) -> None:
        port = self.sock.getsockname()[1]
        sys.stdout.write(f"ready pid={os.getpid()} fd={self.sock.fileno()} port={port}\n")
        sys.stdout.flush()

    # ---- the loop

    def run(self) -> int:
        self._install_signals()
        self.sock.setblocking(False)
        self.sel.register(self.wake.reader, selectors.EVENT_READ, "wake")
        self.sel.register(self.sock, selectors.EVENT_READ, "listen")
        self.announce()
        try:
            if self.tcp:
                self._run_tcp()
            else:
                self._run_udp()
        finally:
            kind = "connections" if self.tcp else "datagrams"
            print(f"demo_worker {self.name}: served {self.served} {kind}", file=sys.stderr, flush=True)
            self.close()
        return 0

    def _run_udp(self) -> None:
        while not self.stopping:
            for key, _ in self.sel.select():
                if key.data == "wake":
                    self.wake.drain()
                else:
                    self._serve_datagrams()

    def _serve_datagrams(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                _, peer = self.sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # e.g. a queued ICMP error: UDP is lossy, keep serving
            try:
                self.sock.sendto(self.udp_reply, peer)
                self.served += 1
            except OSError:
                pass

    def _run_tcp(self) -> None:
        next_sweep = time.monotonic() + SWEEP_INTERVAL
        resume_accept = 0.0  # with --accept-delay: when the listener is watched again
        while not self.stopping:
            now = time.monotonic()
            timeout = next_sweep - now
            if resume_accept:
                timeout = min(timeout, resume_accept - now)
            for key, events in self.sel.select(max(timeout, 0.0)):
                if key.data == "wake":
                    self.wake.drain()
                elif key.data == "listen":
                    self._accept_batch()
                    if self.accept_delay:
                        # Stop watching the listener rather than sleeping, so the
                        # connections already accepted are still served meanwhile.
                        self.sel.unregister(self.sock)
                        resume_accept = time.monotonic() + self.accept_delay
                else:
                    self._on_conn(key.data, events)
            now = time.monotonic()
            if resume_accept and now >= resume_accept and not self.stopping:
                self.sel.register(self.sock, selectors.EVENT_READ, "listen")
                resume_accept = 0.0
            if now >= next_sweep:
                self._sweep(now)
                next_sweep = now + SWEEP_INTERVAL
        self._shutdown_tcp(registered=not resume_accept)

    def _shutdown_tcp(self, registered: bool) -> None:
        """Serve what already reached this worker, then leave.

        Connections still in the accept queue belong to this socket alone: if
        it closed with them queued, the kernel would reset them.  So they are
        accepted first, and only then is the listener closed (unless
        --close-first asks for what many servers do).
        """
        if not self.close_first:
            self._accept_batch(limit=None)
        if registered:
            self.sel.unregister(self.sock)
        self.sock.close()
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while self.conns:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for key, events in self.sel.select(left):
                if key.data == "wake":
                    self.wake.drain()
                elif isinstance(key.data, _Conn):
                    self._on_conn(key.data, events)

    def _accept_batch(self, limit: int | None = ACCEPT_BATCH) -> None:
        n = 0
        deadline = time.monotonic() + IDLE_TIMEOUT
        while limit is None or n < limit:
            try:
                csock, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # ECONNABORTED and friends concern one connection; EMFILE would
                # spin, so stop this batch and let the next readiness retry.
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EPERM):
                    continue
                return
            n += 1
            csock.setblocking(False)
            conn = _Conn(csock, deadline)
            self.conns[csock.fileno()] = conn
            # Most clients send their request right after the handshake: try
            # at once and only fall back to epoll if it has not arrived yet.
            if self._read(conn):
                self.sel.register(csock, selectors.EVENT_READ, conn)
                conn.watched = selectors.EVENT_READ

    def _on_conn(self, conn: _Conn, events: int) -> None:
        if events & selectors.EVENT_WRITE:
            self._write(conn)
        elif events & selectors.EVENT_READ:
            # False means the connection was closed or switched to writing:
            # _close() and _write() keep the selector registration right.
            self._read(conn)

    def _read(self, conn: _Conn) -> bool:
        """Read what is there; True while the connection still waits for its head."""
        try:
            data = conn.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            self._close(conn)
            return False
        if not data:  # the client gave up before finishing its request
            self._close(conn)
            return False
        conn.head += data
        conn.deadline = time.monotonic() + IDLE_TIMEOUT
        if b"\r\n\r\n" in conn.head or b"\n\n" in conn.head:
            conn.out = self.http_reply
            self.served += 1
            self._write(conn)
            return False
        if len(conn.head) > MAX_HEAD:
            self._close(conn)
            return False
        return True

    def _write(self, conn: _Conn) -> None:
        try:
            sent = conn.sock.send(conn.out)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._close(conn)
            return
        conn.out = conn.out[sent:]
        if not conn.out:
            self._close(conn)
            return
        # Rare with a reply this small, but a full send buffer must not block the loop.
        if conn.watched:
            self.sel.modify(conn.sock, selectors.EVENT_WRITE, conn)
        else:
            self.sel.register(conn.sock, selectors.EVENT_WRITE, conn)
        conn.watched = selectors.EVENT_WRITE

    def _close(self, conn: _Conn) -> None:
        fd = conn.sock.fileno()
        if fd == -1:
            return
        self.conns.pop(fd, None)
        if conn.watched:
            self.sel.unregister(conn.sock)
            conn.watched = 0
        # Closing with unread bytes queued makes the kernel send RST instead of
        # FIN, and an RST can destroy the reply before the client reads it.
        try:
            while conn.sock.recv(4096):
                pass
        except OSError:
            pass
        conn.sock.close()

    def _sweep(self, now: float) -> None:
        for conn in [c for c in self.conns.values() if c.deadline <= now]:
            self._close(conn)


DESCRIPTION = "Demo worker: answers every TCP (HTTP) connection or UDP datagram with its name."


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The worker's options, on its own parser and on `rpctl demo-worker`'s."""
    p.add_argument("--name", required=True, help="the name every reply carries")
    p.add_argument(
        "--proto",
        choices=("tcp", "udp"),
        default=None,
        help="protocol (default tcp; with socket activation the passed socket's type)",
    )
    p.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help="address to bind, [::1]:PORT for IPv6; ignored under socket activation",
    )
    p.add_argument(
        "--accept-delay",
        metavar="MS",
        type=float,
        default=0.0,
        help="pause this long between accept batches, so that an accept queue builds up",
    )
    p.add_argument(
        "--close-first",
        action="store_true",
        help="on SIGTERM close the listener at once, leaving its queue unaccepted (as nginx and Go servers do)",
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rpctl.cli.demo.worker", description=DESCRIPTION)
    add_arguments(p)
    return serve(p.parse_args(argv))


def serve(args: argparse.Namespace) -> int:
    """Serve on the socket-activated fd 3, else on --listen, until SIGTERM; the exit code."""
    try:
        sock = activated_socket()
    except OSError as exc:  # e.g. ENOTSOCK: fd 3 is not what LISTEN_FDS promised
        print(f"demo_worker: fd {SD_LISTEN_FDS_START} from socket activation: {exc}", file=sys.stderr)
        return 1
    if sock is not None:
        actual = PROTO_NAMES.get(sock.proto)
        if actual is None:
            sock.close()
            print(f"demo_worker: fd {SD_LISTEN_FDS_START} is neither a TCP nor a UDP socket", file=sys.stderr)
            return 2
        if args.proto is not None and args.proto != actual:
            sock.close()
            print(f"demo_worker: --proto {args.proto} but fd 3 is a {actual} socket", file=sys.stderr)
            return 2
        if actual == "tcp":
            # Harmless on a socket that already listens (it only sets the
            # backlog) and required on one that was merely bound.
            sock.listen(LISTEN_BACKLOG)
    else:
        if not args.listen:
            print("demo_worker: --listen is required without socket activation", file=sys.stderr)
            return 2
        proto = args.proto or "tcp"
        try:
            host, port = parse_hostport(args.listen)
        except ValueError as exc:
            print(f"demo_worker: cannot listen on {args.listen}: {exc}", file=sys.stderr)
            return 1
        try:
            # The same socket `rpctl run` makes: it joins (or founds) the reuseport group of host:port.
            sock = reuseport_socket(proto, host, port, backlog=LISTEN_BACKLOG)
        except OSError as exc:
            where = endpoint_text(proto, family_of(host), host, port)
            print(f"demo_worker: cannot listen on {where}: {exc}", file=sys.stderr)
            return 1
    return Worker(args.name, sock, accept_delay=max(args.accept_delay, 0.0) / 1000.0,
                  close_first=args.close_first).run()


if __name__ == "__main__":
    sys.exit(main())
