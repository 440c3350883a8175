"""rpctl.controller.kernel.diag against real sockets on loopback; no root needed."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import time

import pytest
from rpctl.controller.kernel import diag

TCP, UDP = socket.IPPROTO_TCP, socket.IPPROTO_UDP
SO_COOKIE = getattr(socket, "SO_COOKIE", 57)


def cookie(s: socket.socket) -> int:
    return struct.unpack("=Q", s.getsockopt(socket.SOL_SOCKET, SO_COOKIE, 8))[0]


@pytest.fixture
def socks():
    made: list[socket.socket] = []

    def make(family=socket.AF_INET, kind=socket.SOCK_STREAM, reuseport=False):
        s = socket.socket(family, kind)
        made.append(s)
        if reuseport:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        return s

    yield make
    for s in made:
        s.close()


def group(make, n, kind, addr="127.0.0.1", family=socket.AF_INET, backlog=8):
    """n SO_REUSEPORT sockets bound to one ephemeral port (listening if TCP)."""
    out, port = [], 0
    for _ in range(n):
        s = make(family, kind, reuseport=True)
        s.bind((addr, port))
        port = s.getsockname()[1]
        if kind == socket.SOCK_STREAM:
            s.listen(backlog)
        out.append(s)
    return out, port


def wait_for(fn, ok, timeout=2.0):
    """Loopback delivery is normally done when the syscall returns; allow slack anyway."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if ok(v) or time.monotonic() > deadline:
            return v
        time.sleep(0.005)


def drain(s: socket.socket, accept: bool) -> int:
    s.setblocking(False)
    n = 0
    while True:
        try:
            if accept:
                s.accept()[0].close()
            else:
                s.recv(65536)
        except BlockingIOError:
            return n
        n += 1


def test_tcp_reuseport_group_and_accept_queues(socks):
    servers, port = group(socks, 2, socket.SOCK_STREAM, backlog=8)
    for _ in range(3):
        socks().connect(("127.0.0.1", port))
    got = wait_for(lambda: diag.listeners(TCP, port), lambda d: sum(x.rqueue for x in d.values()) == 3)
    assert set(got) == {cookie(s) for s in servers}
    for s in servers:
        d = got[cookie(s)]
        assert (d.family, d.proto, d.state) == (socket.AF_INET, TCP, 10)
        assert (d.local_addr, d.local_port) == ("127.0.0.1", port)
        assert d.inode == os.fstat(s.fileno()).st_ino
        assert d.uid == os.geteuid()
        assert d.wqueue == 8  # the listen() backlog
    assert sum(d.rqueue for d in got.values()) == 3
    for s in servers:
        assert drain(s, accept=True) == got[cookie(s)].rqueue
    assert all(d.rqueue == 0 for d in diag.listeners(TCP, port).values())


def test_ipv6_loopback(socks):
    try:
        (s,), port = group(socks, 1, socket.SOCK_STREAM, addr="::1", family=socket.AF_INET6)
    except OSError as e:
        pytest.fail(f"cannot listen on [::1] (IPv6 loopback is expected here): {e}")
    d = diag.listeners(TCP, port, family=socket.AF_INET6)[cookie(s)]
    assert (d.family, d.local_addr, d.local_port, d.state) == (socket.AF_INET6, "::1", port, 10)
    assert cookie(s) in diag.listeners(TCP, port)
    assert diag.listeners(TCP, port, family=socket.AF_INET) == {}


def test_udp_receive_queues(socks):
    servers, port = group(socks, 2, socket.SOCK_DGRAM)
    for i in range(16):  # distinct source ports spread over the group
        socks(kind=socket.SOCK_DGRAM).sendto(b"x" * 100, ("127.0.0.1", port))
    got = wait_for(lambda: diag.listeners(UDP, port), lambda d: sum(x.rqueue for x in d.values()) > 0)
    assert set(got) == {cookie(s) for s in servers}
    assert all(d.state == 7 and d.proto == UDP and d.local_port == port for d in got.values())
    received = {cookie(s): drain(s, accept=False) for s in servers}
    assert sum(received.values()) == 16
    for c, n in received.items():
        assert (got[c].rqueue > 0) == (n > 0), (got[c], n)
    assert all(d.rqueue == 0 for d in diag.listeners(UDP, port).values())


def test_queue_depths_drops_closed_socket(socks):
    a, b = socks(), socks()
    for s in (a, b):
        s.bind(("127.0.0.1", 0))
        s.listen(4)
    socks().connect(a.getsockname())
    ca, cb = cookie(a), cookie(b)
    b.close()
    depths = wait_for(lambda: diag.queue_depths(TCP, [ca, cb, 1 << 63]), lambda d: d.get(ca) == 1)
    assert depths == {ca: 1}


def test_port_filter(socks):
    (t1,), p1 = group(socks, 1, socket.SOCK_STREAM)
    (t2,), p2 = group(socks, 1, socket.SOCK_STREAM)
    (u1,), q1 = group(socks, 1, socket.SOCK_DGRAM)
    (u2,), q2 = group(socks, 1, socket.SOCK_DGRAM)
    assert set(diag.listeners(TCP, p1)) == {cookie(t1)}
    assert set(diag.listeners(UDP, q2)) == {cookie(u2)}
    assert {cookie(t1), cookie(t2)} <= set(diag.listeners(TCP))
    assert {cookie(u1), cookie(u2)} <= set(diag.listeners(UDP))
    assert cookie(u1) not in diag.listeners(TCP) and cookie(t1) not in diag.listeners(UDP)


def test_a_listener_dump_splits_by_endpoint(socks):
    # Two groups on two ports, a listener of another address on the first port,
    # and a bound UDP socket: one dump per protocol and family, split here.
    web, port = group(socks, 2, socket.SOCK_STREAM)
    api, other_port = group(socks, 1, socket.SOCK_STREAM)
    aside = socks(reuseport=True)
    aside.bind(("127.0.0.2", port))
    aside.listen()
    dns, dns_port = group(socks, 1, socket.SOCK_DGRAM, addr="::1", family=socket.AF_INET6)
    client = socks()
    client.connect(("127.0.0.1", port))
    web_key = diag.wire_endpoint(TCP, socket.AF_INET, "127.0.0.1", port)
    got = wait_for(lambda: diag.ListenerDump(TCP, socket.AF_INET).by_endpoint(),
                   lambda d: sum(d.get(web_key, {}).values()) == 1)
    # The connection waits in one of the two listeners' accept queues.
    assert set(got[web_key]) == {cookie(s) for s in web} and sorted(got[web_key].values()) == [0, 1]
    assert set(got[diag.wire_endpoint(TCP, socket.AF_INET, "127.0.0.1", other_port)]) == {cookie(api[0])}
    assert set(got[diag.wire_endpoint(TCP, socket.AF_INET, "127.0.0.2", port)]) == {cookie(aside)}
    assert all(k[:2] == (TCP, socket.AF_INET) for k in got), "only TCP over IPv4: no UDP, no IPv6"
    udp = diag.ListenerDump(UDP, socket.AF_INET6).by_endpoint()
    assert set(udp[diag.wire_endpoint(UDP, socket.AF_INET6, "::1", dns_port)]) == {cookie(dns[0])}


def test_a_dump_of_ports_gets_their_listeners_alone_from_the_kernel(socks):
    groups = [group(socks, 2, socket.SOCK_STREAM) for _ in range(3)]
    (first, p1), (_, p2), (third, p3) = groups
    got = diag.ListenerDump(TCP, socket.AF_INET, ports=[p3, p1]).by_endpoint()
    assert {k[3] for k in got} == {p1, p3}
    assert set(got[diag.wire_endpoint(TCP, socket.AF_INET, "127.0.0.1", p1)]) == {cookie(s) for s in first}
    assert set(got[diag.wire_endpoint(TCP, socket.AF_INET, "127.0.0.1", p3)]) == {cookie(s) for s in third}
    assert list(diag.ListenerDump(TCP, socket.AF_INET, ports=[p2]).by_endpoint()) == [
        diag.wire_endpoint(TCP, socket.AF_INET, "127.0.0.1", p2)]
    # Many ports: every jump of the filter stays within what the kernel takes.
    many = [p1, p2, p3] + [port for port in range(1024, 1024 + diag.MAX_FILTER_PORTS - 3)]
    assert {k[3] for k in diag.ListenerDump(TCP, socket.AF_INET, ports=many).by_endpoint()} >= {p1, p2, p3}
    with pytest.raises(ValueError):
        diag.ListenerDump(TCP, socket.AF_INET, ports=[])
    with pytest.raises(ValueError):
        diag.ListenerDump(TCP, socket.AF_INET, ports=[0])


def test_a_listener_dumps_fingerprint_changes_with_listeners_not_with_queues(socks):
    servers, port = group(socks, 2, socket.SOCK_STREAM)
    web = diag.wire_endpoint(TCP, socket.AF_INET, "127.0.0.1", port)

    def fingerprints_around_a_queued_connection() -> tuple[bytes, bytes]:
        before = diag.ListenerDump(TCP, socket.AF_INET).fingerprint()
        socks().connect(("127.0.0.1", port))
        queued = wait_for(lambda: diag.ListenerDump(TCP, socket.AF_INET),
                          lambda d: sum(d.by_endpoint()[web].values()) == 1)
        for s in servers:
            drain(s, accept=True)
        return before, queued.fingerprint()

    # The namespace is shared with whatever else runs: a listener of someone else's may come or go.
    tries = [fingerprints_around_a_queued_connection() for _ in range(3)]
    assert any(before == queued for before, queued in tries), "a connection waiting changes no listener"
    before = diag.ListenerDump(TCP, socket.AF_INET).fingerprint()
    more, _ = group(socks, 1, socket.SOCK_STREAM)
    assert diag.ListenerDump(TCP, socket.AF_INET).fingerprint() != before
    more[0].close()
    servers[1].close()
    assert diag.ListenerDump(TCP, socket.AF_INET).fingerprint() != before


def test_wire_endpoint_packs_the_address_as_the_dump_does():
    assert diag.wire_endpoint(TCP, socket.AF_INET, "127.0.0.1", 80) == (TCP, socket.AF_INET, bytes([127, 0, 0, 1]), 80)
    assert diag.wire_endpoint(UDP, socket.AF_INET6, "::", 53).addr == bytes(16)
    assert diag.wire_endpoint(UDP, socket.AF_INET6, "fe80::1%lo", 53).addr == socket.inet_pton(socket.AF_INET6, "fe80::1")


def test_holders_finds_own_fds(socks):
    s = socks()
    s.bind(("127.0.0.1", 0))
    ino = os.fstat(s.fileno()).st_ino
    dup = os.dup(s.fileno())
    try:
        h = diag.holders([ino, 0])
    finally:
        os.close(dup)
    assert (os.getpid(), s.fileno()) in h[ino] and (os.getpid(), dup) in h[ino]
    assert h[0] == []


def test_kernel_error_is_raised_not_swallowed(monkeypatch):
    # No inet_diag handler exists for protocol 253 (reserved for experiments):
    # the kernel answers the dump with ENOENT in NLMSG_DONE.
    monkeypatch.setitem(diag.PROTOCOLS, 253, diag.Protocol("proto-253", 7))
    with pytest.raises(OSError, match="read sockets through sock_diag: AF_INET proto-253 dump"):
        diag.listeners(253, family=socket.AF_INET)


def test_bad_arguments():
    with pytest.raises(ValueError):
        diag.listeners(socket.IPPROTO_ICMP)
    with pytest.raises(ValueError):
        diag.listeners(TCP, port=0)


def test_import_does_not_load_pyroute2():
    code = "import sys, rpctl.controller.kernel.diag; sys.exit('pyroute2' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
