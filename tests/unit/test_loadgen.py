"""The load generator: counting, failure classification, source variation, stop conditions.

Counting is checked against real demo workers; failure kinds against tiny
in-test servers that misbehave on purpose (never answer, reset, talk
nonsense), because a classification is only trustworthy if each kind has
been provoked for real.  Everything stays on loopback.
"""

from __future__ import annotations

import collections
import contextlib
import ipaddress
import json
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest
from rpctl.cli.demo import loadgen
from rpctl.cli.demo import worker as dw
from rpctl.cli.demo.loadgen import Tally, run_tcp, run_udp

from tests.support.traffic import read_request_head


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def group():
    """Two demo workers on one TCP port; yields the port."""
    port = free_port()
    procs = []
    try:
        for name in ("w1", "w2"):
            procs.append(dw.spawn(name, f"127.0.0.1:{port}")[0])
        yield port
    finally:
        for proc in procs:
            dw.stop(proc)


@pytest.fixture
def udp_group():
    port = free_port(socket.SOCK_DGRAM)
    procs = []
    try:
        for name in ("u1", "u2"):
            procs.append(dw.spawn(name, f"127.0.0.1:{port}", proto="udp")[0])
        yield port
    finally:
        for proc in procs:
            dw.stop(proc)


@contextlib.contextmanager
def fake_server(handler, backlog: int = 64, accept: bool = True):
    """A one-thread TCP server on 127.0.0.1 that runs ``handler(conn, peer)`` per connection.

    With ``accept=False`` it only listens: the kernel completes handshakes
    into the queue and nobody ever answers.
    """
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.bind(("127.0.0.1", 0))
    ls.listen(backlog)
    ls.settimeout(0.05)
    done = threading.Event()

    def loop():
        while not done.is_set():
            try:
                conn, peer = ls.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with conn:
                try:
                    handler(conn, peer)
                except OSError:
                    pass

    thread = threading.Thread(target=loop, daemon=True) if accept else None
    if thread:
        thread.start()
    try:
        yield ls.getsockname()[1]
    finally:
        done.set()
        if thread:
            thread.join(2.0)
        ls.close()


def read_head(conn: socket.socket) -> bytes:
    return read_request_head(conn, 2.0)


# ---------------------------------------------------------------- pure parts


def test_tally_math():
    t = Tally()
    assert t.total_ok() == 0 and t.shares() == {} and t.rate() == 0.0
    t.by_name.update({"a": 3, "b": 1})
    t.failures["reset"] += 2
    t.sent = 6
    t.elapsed = 2.0
    assert t.total_ok() == 4
    assert t.shares() == {"a": 0.75, "b": 0.25}
    assert t.rate() == 2.0
    d = t.to_dict()
    assert d["ok"] == 4 and d["failures"] == {"reset": 2} and d["by_name"] == {"a": 3, "b": 1}
    json.dumps(d)


def test_loopback_sources_are_valid_varied_and_reproducible():
    addrs = [loadgen.loopback_source(i, seed=7) for i in range(5000)]
    for a in addrs:
        ip = ipaddress.IPv4Address(a)
        assert ip in ipaddress.IPv4Network("127.0.0.0/8")
        assert a.split(".")[3] not in ("0", "255")
    assert len(set(addrs)) > 4900
    assert addrs == [loadgen.loopback_source(i, seed=7) for i in range(5000)]
    assert addrs[:50] != [loadgen.loopback_source(i, seed=8) for i in range(50)]
    # Spread over the whole /8, not bunched in one corner of it.
    assert len({a.split(".")[1] for a in addrs}) > 200


def test_parse_reply():
    assert loadgen.parse_reply(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nw1\n") == "w1"
    assert loadgen.parse_reply(b"HTTP/1.0 200 OK\r\n\r\nname\nmore\n") == "name"
    for bad in (b"", b"garbage", b"HTTP/1.1 500 Oops\r\n\r\nw1\n", b"HTTP/1.1 200 OK\r\n\r\n"):
        with pytest.raises(loadgen.BadReply):
            loadgen.parse_reply(bad)


def test_classify():
    assert loadgen.classify(ConnectionRefusedError()) == "refused"
    assert loadgen.classify(ConnectionResetError()) == "reset"
    assert loadgen.classify(BrokenPipeError()) == "reset"
    assert loadgen.classify(socket.timeout()) == "timeout"
    assert loadgen.classify(TimeoutError()) == "timeout"
    assert loadgen.classify(OSError(99, "Cannot assign requested address")) == "other"
    assert loadgen.classify(loadgen.BadReply("x")) == "other"


def test_argument_checks():
    with pytest.raises(ValueError, match="never end"):
        run_tcp("127.0.0.1", 1)
    with pytest.raises(ValueError, match="sources"):
        run_tcp("127.0.0.1", 1, count=1, sources="random")
    with pytest.raises(ValueError):
        run_tcp("127.0.0.1", 1, count=1, concurrency=0)
    with pytest.raises(ValueError):
        run_tcp("localhost", 1, count=1)  # literal addresses only


# ---------------------------------------------------------------- against demo workers


def test_tcp_count_against_two_workers(group):
    tally = run_tcp("127.0.0.1", group, count=300)
    assert tally.total_ok() == 300
    assert tally.sent == 300
    assert not tally.failures
    assert set(tally.by_name) == {"w1", "w2"}
    assert sum(tally.shares().values()) == pytest.approx(1.0)


def test_udp_count_against_two_workers(udp_group):
    tally = run_udp("127.0.0.1", udp_group, count=300)
    assert tally.total_ok() == 300
    assert tally.sent == 300
    assert not tally.failures
    assert set(tally.by_name) == {"u1", "u2"}


def test_duration(group):
    tally = run_tcp("127.0.0.1", group, duration=0.5, concurrency=4)
    assert 0.45 <= tally.elapsed < 2.0
    assert tally.total_ok() > 50
    assert tally.sent == tally.total_ok()
    assert not tally.failures


def test_stop_event(group):
    stop = threading.Event()
    timer = threading.Timer(0.3, stop.set)
    timer.start()
    try:
        tally = run_tcp("127.0.0.1", group, stop=stop, concurrency=4)
    finally:
        timer.cancel()
    assert 0.25 <= tally.elapsed < 2.0
    assert tally.total_ok() > 0 and not tally.failures


def test_stop_event_interrupts_rate_wait(group):
    """A slow rate must not keep the run alive once stop is set."""
    stop = threading.Event()
    timer = threading.Timer(0.2, stop.set)
    timer.start()
    try:
        tally = run_tcp("127.0.0.1", group, count=100, rate=2.0, stop=stop)
    finally:
        timer.cancel()
    assert tally.elapsed < 1.5
    assert tally.total_ok() == 1  # attempt 0 is due at once, attempt 1 only after 0.5 s


def test_rate_cap(group):
    tally = run_tcp("127.0.0.1", group, count=20, rate=50.0, concurrency=8)
    assert tally.total_ok() == 20
    # Attempt 19 is due 19/50 s after the start however many threads there are.
    assert tally.elapsed >= 0.36


def test_cli_prints_json(group, udp_group):
    out = subprocess.run(
        [sys.executable, "-m", "rpctl.cli.demo.loadgen", "--target", f"127.0.0.1:{group}", "--count", "50"],
        capture_output=True,
        timeout=30,
        check=True,
    )
    result = json.loads(out.stdout)
    assert result["ok"] == 50 and result["sent"] == 50 and result["failures"] == {}
    assert set(result["by_name"]) <= {"w1", "w2"}

    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "rpctl.cli.demo.loadgen",
            "--target",
            f"127.0.0.1:{udp_group}",
            "--proto",
            "udp",
            "--count",
            "20",
        ],
        capture_output=True,
        timeout=30,
        check=True,
    )
    assert json.loads(out.stdout)["ok"] == 20


def test_cli_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit) as exc:
        loadgen.main(["--target", "nowhere"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit):
        loadgen.main(["--target", "127.0.0.1:1", "--proto", "udp", "--duration", "1"])
    capsys.readouterr()


# ---------------------------------------------------------------- sources


def _recording_server(peers: list):
    def handler(conn, peer):
        peers.append(peer)
        read_head(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\n\r\nrec\n")

    return fake_server(handler)


def test_varied_sources_vary_address_and_port():
    peers: list = []
    with _recording_server(peers) as port:
        tally = run_tcp("127.0.0.1", port, count=60, concurrency=2)
    assert tally.by_name == {"rec": 60}
    addrs = {p[0] for p in peers}
    assert len(addrs) >= 55
    assert all(ipaddress.IPv4Address(a) in ipaddress.IPv4Network("127.0.0.0/8") for a in addrs)
    assert len({p[1] for p in peers}) >= 55


def test_fixed_sources_leave_the_address_to_the_kernel():
    peers: list = []
    with _recording_server(peers) as port:
        tally = run_tcp("127.0.0.1", port, count=20, concurrency=2, sources="fixed")
    assert tally.total_ok() == 20
    assert {p[0] for p in peers} == {"127.0.0.1"}
    assert len({p[1] for p in peers}) == 20


def test_udp_varied_sources():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as srv:
        srv.bind(("127.0.0.1", 0))
        srv.settimeout(2.0)
        port = srv.getsockname()[1]
        peers = []

        def echo():
            for _ in range(30):
                try:
                    _, peer = srv.recvfrom(100)
                except OSError:
                    return
                peers.append(peer)
                srv.sendto(b"e\n", peer)

        t = threading.Thread(target=echo, daemon=True)
        t.start()
        tally = run_udp("127.0.0.1", port, count=30, concurrency=2)
        t.join(3.0)
    assert tally.by_name == {"e": 30}
    assert len({p[0] for p in peers}) >= 28


# ---------------------------------------------------------------- failure kinds


def test_refused():
    port = free_port()  # nobody listens there
    tally = run_tcp("127.0.0.1", port, count=10, concurrency=2)
    assert tally.failures == collections.Counter(refused=10)
    assert tally.total_ok() == 0 and tally.sent == 10


def test_udp_refused():
    port = free_port(socket.SOCK_DGRAM)
    tally = run_udp("127.0.0.1", port, count=10, concurrency=2)
    assert tally.failures == collections.Counter(refused=10)


def test_timeout_when_nobody_answers():
    # The kernel completes the handshake into the accept queue; the request
    # is sent, and no reply ever comes.
    with fake_server(None, accept=False) as port:
        t0 = time.monotonic()
        tally = run_tcp("127.0.0.1", port, count=4, concurrency=4, timeout=0.3)
        elapsed = time.monotonic() - t0
    assert tally.failures == collections.Counter(timeout=4)
    assert elapsed < 2.0


def test_udp_timeout_when_nobody_answers():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as mute:
        mute.bind(("127.0.0.1", 0))
        tally = run_udp("127.0.0.1", mute.getsockname()[1], count=4, concurrency=4, timeout=0.2)
    assert tally.failures == collections.Counter(timeout=4)


def test_reset():
    def abort(conn, peer):
        read_head(conn)
        # SO_LINGER with a zero timeout: close() sends RST instead of FIN.
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    with fake_server(abort) as port:
        tally = run_tcp("127.0.0.1", port, count=10, concurrency=2)
    assert tally.failures == collections.Counter(reset=10)


def test_bad_reply_is_other():
    def nonsense(conn, peer):
        read_head(conn)
        conn.sendall(b"SSH-2.0-not-http\r\n")

    with fake_server(nonsense) as port:
        tally = run_tcp("127.0.0.1", port, count=5, concurrency=1)
    assert tally.failures == collections.Counter(other=5)


def test_bug_in_a_thread_is_raised(monkeypatch):
    """A programming error must surface, not be counted as a network failure."""

    def broken(*args):
        raise KeyError("bug")

    def answer(conn, peer):
        read_head(conn)
        conn.sendall(b"HTTP/1.0 200 OK\r\n\r\nw1\n")

    # The bug is in the attempt itself: reading the reply of a connection that was answered.
    monkeypatch.setattr(loadgen, "parse_reply", broken)
    with fake_server(answer) as port, pytest.raises(KeyError):
        run_tcp("127.0.0.1", port, count=10, concurrency=2)
