"""The demo worker as a real process: ready line, replies, sharing, signals, socket activation.

Each test starts real workers on loopback, because what matters (SO_REUSEPORT
sharing, the fd a controller would take, a clean exit on SIGTERM) only shows
in a real process.  No privileges are needed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from rpctl.cli.demo import worker as dw
from rpctl.cli.demo.loadgen import run_tcp, run_udp


def free_port(host: str = "127.0.0.1", kind: int = socket.SOCK_STREAM) -> int:
    """An ephemeral port nobody holds right now (the kernel picks it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, kind) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def ipv6_loopback_works() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.fixture
def start():
    """Start workers with dw.spawn; every one is stopped (and killed if need be) afterwards."""
    procs: list[subprocess.Popen] = []

    def _start(name: str, listen: str, proto: str = "tcp", **kwargs):
        proc, ready = dw.spawn(name, listen, proto=proto, **kwargs)
        procs.append(proc)
        return proc, ready

    try:
        yield _start
    finally:
        for proc in procs:
            dw.stop(proc, timeout=3.0)


def http_get(host: str, port: int, request: bytes = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n") -> bytes:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.create_connection((host, port), timeout=3.0) as s:
        assert s.family == family
        s.sendall(request)
        return recv_all(s)


def recv_all(s: socket.socket) -> bytes:
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            return data
        data += chunk


def wait_exit(proc: subprocess.Popen, timeout: float) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"worker pid {proc.pid} still running {timeout}s after SIGTERM")


# ---------------------------------------------------------------- helpers


def test_parse_hostport():
    assert dw.parse_hostport("127.0.0.1:80") == ("127.0.0.1", 80)
    assert dw.parse_hostport("[::1]:8080") == ("::1", 8080)
    for bad in ("127.0.0.1", "::1:80", "localhost:80", "127.0.0.1:x", "127.0.0.1:70000", ":80"):
        with pytest.raises(ValueError):
            dw.parse_hostport(bad)


def test_parse_ready():
    assert dw.parse_ready("ready pid=12 fd=3 port=8080\n") == dw.Ready(pid=12, fd=3, port=8080)
    for bad in ("", "hello", "ready pid=1 fd=3", "ready pid=x fd=3 port=1"):
        with pytest.raises(ValueError):
            dw.parse_ready(bad)


# ---------------------------------------------------------------- TCP


def test_ready_line_and_exact_http_reply(start):
    port = free_port()
    proc, ready = start("w1", f"127.0.0.1:{port}")
    assert ready.pid == proc.pid
    assert ready.port == port
    assert ready.fd >= 3
    # The fd must really be the listener: a controller takes it by number.
    target = os.readlink(f"/proc/{proc.pid}/fd/{ready.fd}")
    assert target.startswith("socket:[")
    reply = http_get("127.0.0.1", port)
    assert reply == b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nw1\n"
    # HTTP/1.0 and a bare-LF head (as nc or a hand-typed request sends) work too.
    assert http_get("127.0.0.1", port, b"GET / HTTP/1.0\n\n").endswith(b"\r\n\r\nw1\n")


def test_two_tcp_workers_share_the_port(start):
    port = free_port()
    start("w1", f"127.0.0.1:{port}")
    start("w2", f"127.0.0.1:{port}")
    tally = run_tcp("127.0.0.1", port, count=300)
    assert tally.total_ok() == 300
    assert not tally.failures
    assert set(tally.by_name) == {"w1", "w2"}


def test_ipv6_loopback(start):
    if not ipv6_loopback_works():
        pytest.fail("no usable ::1 on this machine: IPv6 loopback is required (sysctl net.ipv6.conf.lo.disable_ipv6=0)")
    port = free_port("::1")
    _, ready = start("v1", f"[::1]:{port}")
    start("v2", f"[::1]:{port}")
    assert ready.port == port
    assert http_get("::1", port).split(b"\r\n\r\n", 1)[1] in (b"v1\n", b"v2\n")
    # On ::1 only the client port varies; that is still enough for the hash to spread.
    tally = run_tcp("::1", port, count=300)
    assert tally.total_ok() == 300
    assert not tally.failures
    assert set(tally.by_name) == {"v1", "v2"}


def test_accept_delay_still_serves_everything(start):
    port = free_port()
    start("slow", f"127.0.0.1:{port}", accept_delay_ms=200)
    tally = run_tcp("127.0.0.1", port, count=40, concurrency=8)
    assert tally.total_ok() == 40
    assert not tally.failures
    # 40 connections, at most 8 at a time: at least one 200 ms pause must have
    # been waited through, so the accept queue did build up meanwhile.
    assert tally.elapsed >= 0.15


def test_idle_connection_is_closed(start):
    """A client that connects and sends nothing must not hold a slot forever."""
    port = free_port()
    start("w1", f"127.0.0.1:{port}")
    with socket.create_connection(("127.0.0.1", port), timeout=8.0) as s:
        t0 = time.monotonic()
        assert s.recv(100) == b""  # EOF: the worker closed it
        waited = time.monotonic() - t0
    assert dw.IDLE_TIMEOUT - 0.5 <= waited <= dw.IDLE_TIMEOUT + 2.0
    # And the worker is still fine.
    assert http_get("127.0.0.1", port).endswith(b"w1\n")


# ---------------------------------------------------------------- UDP


def test_udp_reply(start):
    port = free_port(kind=socket.SOCK_DGRAM)
    start("u1", f"127.0.0.1:{port}", proto="udp")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2.0)
        s.sendto(b"anything", ("127.0.0.1", port))
        data, peer = s.recvfrom(100)
    assert data == b"u1\n"
    assert peer == ("127.0.0.1", port)


def test_two_udp_workers_share_the_port(start):
    port = free_port(kind=socket.SOCK_DGRAM)
    start("u1", f"127.0.0.1:{port}", proto="udp")
    start("u2", f"127.0.0.1:{port}", proto="udp")
    tally = run_udp("127.0.0.1", port, count=300)
    assert tally.total_ok() == 300
    assert not tally.failures
    assert set(tally.by_name) == {"u1", "u2"}


# ---------------------------------------------------------------- signals


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_sigterm_exits_zero(start, proto):
    port = free_port(kind=socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
    proc, _ = start("w1", f"127.0.0.1:{port}", proto=proto)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert wait_exit(proc, 3.0) == 0
    assert time.monotonic() - t0 < 3.0


def test_sigint_exits_zero(start):
    proc, _ = start("w1", f"127.0.0.1:{free_port()}")
    proc.send_signal(signal.SIGINT)
    assert wait_exit(proc, 3.0) == 0


def test_sigterm_finishes_in_flight_connection(start):
    """After SIGTERM new connections are refused, but one already accepted gets its reply."""
    port = free_port()
    proc, _ = start("w1", f"127.0.0.1:{port}")
    with socket.create_connection(("127.0.0.1", port), timeout=3.0) as s:
        s.sendall(b"GET / HTTP/1.0\r\n")  # half a head: the worker must wait for the rest
        time.sleep(0.3)  # let the worker accept it
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 2.0
        while True:  # the listener goes away: with no other member, the port refuses
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
            except (ConnectionRefusedError, ConnectionResetError):
                # Refused once it is closed; reset when a probe was still in its queue as it closed.
                break
            assert time.monotonic() < deadline, "listener still open after SIGTERM"
            time.sleep(0.02)
        s.sendall(b"Host: x\r\n\r\n")
        assert recv_all(s).endswith(b"\r\n\r\nw1\n")
    assert wait_exit(proc, 3.0) == 0


@pytest.mark.parametrize("close_first", [False, True])
def test_sigterm_and_the_accept_queue(start, close_first):
    """By default the queue is served before the listener closes; --close-first
    closes it at once, and the kernel resets what was queued."""
    port = free_port()
    proc, _ = start("w1", f"127.0.0.1:{port}", accept_delay_ms=60000, close_first=close_first)
    # The first connection is accepted and answered; then the worker stops
    # watching its listener for 60 s, so the next ones stay queued.
    assert http_get("127.0.0.1", port).endswith(b"w1\n")
    # The reply is written from inside the worker's accept batch, which then
    # goes on until the queue is empty: connect only once that batch is over.
    time.sleep(0.2)
    queued = [socket.create_connection(("127.0.0.1", port), timeout=3.0) for _ in range(5)]
    try:
        for q in queued:
            q.sendall(b"GET / HTTP/1.0\r\n\r\n")
        time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        outcomes = []
        for q in queued:
            try:
                outcomes.append(recv_all(q).endswith(b"w1\n"))
            except ConnectionResetError:
                outcomes.append(False)
    finally:
        for q in queued:
            q.close()
    assert outcomes == [not close_first] * 5
    assert wait_exit(proc, 3.0) == 0


def test_sigterm_with_stuck_client_is_bounded(start):
    """A client that never finishes its request delays exit by at most the 2 s drain."""
    port = free_port()
    proc, _ = start("w1", f"127.0.0.1:{port}")
    with socket.create_connection(("127.0.0.1", port), timeout=3.0):
        time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert wait_exit(proc, 3.0) == 0


# ---------------------------------------------------------------- socket activation

# Stands in for systemd: puts the inherited socket at fd 3, sets LISTEN_PID to
# its own pid and execs the worker, which keeps that pid.
ACTIVATE = """
import os, sys
fd = int(sys.argv[1])
if fd != 3:
    os.dup2(fd, 3)
    os.close(fd)
os.environ["LISTEN_PID"] = str(os.getpid())
os.environ["LISTEN_FDS"] = "1"
os.execv(sys.executable, [sys.executable] + sys.argv[2:])
"""


def spawn_activated(sock: socket.socket, *worker_args: str, env: dict | None = None) -> subprocess.Popen:
    argv = [sys.executable, "-c", ACTIVATE, str(sock.fileno()), "-m", "rpctl.cli.demo.worker", *worker_args]
    return subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, pass_fds=(sock.fileno(),), env=env
    )


@pytest.mark.parametrize("bound_only", [False, True], ids=["listening", "bound-only"])
def test_socket_activation_uses_fd3(bound_only):
    decoy = free_port()  # --listen names another port: it must be ignored
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        if not bound_only:
            sock.listen(16)
        port = sock.getsockname()[1]
        proc = spawn_activated(sock, "--name", "sd", "--listen", f"127.0.0.1:{decoy}")
        try:
            ready = dw.wait_ready(proc)
            assert ready == dw.Ready(pid=proc.pid, fd=3, port=port)
            assert http_get("127.0.0.1", port).endswith(b"\r\n\r\nsd\n")
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", decoy), timeout=1.0).close()
        finally:
            rc = dw.stop(proc)
    assert rc == 0


def test_socket_activation_udp():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        proc = spawn_activated(sock, "--name", "sdu")  # no --proto: taken from the socket
        try:
            assert dw.wait_ready(proc) == dw.Ready(pid=proc.pid, fd=3, port=port)
            tally = run_udp("127.0.0.1", port, count=20)
            assert tally.by_name == {"sdu": 20}
        finally:
            rc = dw.stop(proc)
    assert rc == 0


def test_listen_pid_of_another_process_is_ignored(start):
    """Inherited LISTEN_* variables that name another pid must not make fd 3 the listener."""
    port = free_port()
    env = dict(os.environ, LISTEN_PID="1", LISTEN_FDS="1")
    _, ready = start("w1", f"127.0.0.1:{port}", env=env)
    assert ready.port == port
    assert http_get("127.0.0.1", port).endswith(b"w1\n")


# ---------------------------------------------------------------- bad arguments


@pytest.mark.parametrize(
    "args",
    [
        ["--name", "x"],  # no --listen and no socket activation
        ["--name", "x", "--listen", "nonsense"],
        ["--name", "x", "--listen", "127.0.0.1:99999"],
    ],
)
def test_bad_arguments_fail_fast(args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")}
    res = subprocess.run(
        [sys.executable, "-m", "rpctl.cli.demo.worker", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=10,
        env=env,
        check=False,
    )
    assert res.returncode != 0
    assert res.stdout == b""  # no ready line
    assert b"demo_worker" in res.stderr
