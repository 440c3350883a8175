"""rpctl.controller.kernel.diag against real sockets on loopback; no root needed."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rpctl.controller.kernel import diag

from tests.support import hostile

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


# Hostile replies: generated and mutated buffers fed to the same parsing a dump runs ---------------

NLMSG = struct.Struct("=IHHII")
INET_DIAG_MSG = struct.Struct("=BBBBHH16s16sIQIIIII")  # family, state, timer, retrans, sockid, expires, queues, uid, inode
DONE, ERROR, SOCK_DIAG_BY_FAMILY = 3, 2, 20


def netlink(mtype: int, payload: bytes, length: int | None = None) -> bytes:
    whole = NLMSG.size + len(payload)
    msg = NLMSG.pack(whole if length is None else length, mtype, 2, 1, 0) + payload
    return msg + b"\0" * (-len(msg) % 4)


def inet_diag_msg(family=socket.AF_INET, state=10, port=8080, addr=b"\x7f\0\0\1", cookie=1, rqueue=0,
                  inode=1) -> bytes:
    return INET_DIAG_MSG.pack(family, state, 0, 0, socket.htons(port), 0, addr.ljust(16, b"\0"), b"\0" * 16, 0,
                              cookie, 0, rqueue, 128, 0, inode)


def rtattr(kind: int, value: bytes) -> bytes:
    attr = struct.pack("=HH", 4 + len(value), kind) + value
    return attr + b"\0" * (-len(attr) % 4)


# Two listeners of one port, one with attributes after it (as INET_DIAG_INFO & co. come), then the end.
VALID_REPLY = (netlink(SOCK_DIAG_BY_FAMILY, inet_diag_msg(cookie=7, rqueue=3))
               + netlink(SOCK_DIAG_BY_FAMILY, inet_diag_msg(cookie=8, inode=2) + rtattr(1, b"\1" * 12) + rtattr(99, b""))
               + netlink(DONE, struct.pack("=i", 0)))

payloads = (st.builds(inet_diag_msg, family=st.sampled_from([socket.AF_INET, socket.AF_INET6, 0, 1, 17, 255]),
                      state=st.sampled_from([7, 10, 3, 12]) | st.integers(0, 255), port=st.integers(0, 65535),
                      addr=st.binary(min_size=16, max_size=16), cookie=st.integers(0, 2**64 - 1),
                      rqueue=st.integers(0, 2**32 - 1), inode=st.integers(0, 2**32 - 1))
            .flatmap(lambda msg: st.tuples(st.just(msg), st.lists(st.builds(rtattr, st.integers(0, 65535),
                                                                            st.binary(max_size=12)), max_size=3))
                     .map(lambda t: t[0] + b"".join(t[1])))
            | st.binary(max_size=100) | st.integers(-(2**31), 2**31 - 1).map(lambda e: struct.pack("=i", e)))
messages = st.builds(netlink, st.sampled_from([SOCK_DIAG_BY_FAMILY, DONE, ERROR, 1, 16, 0xFFFF]), payloads,
                     st.none() | st.none() | st.integers(0, 2**32 - 1) | st.integers(0, 120))
replies = st.lists(messages, max_size=6).map(b"".join) | hostile.mutated(VALID_REPLY)


def test_a_valid_reply_parses_to_its_listeners():
    offsets, done = diag.parse_replies(VALID_REPLY, "dump")
    assert done and len(offsets) == 2
    found = diag.decode_listeners([(VALID_REPLY, off) for off in offsets], socket.AF_INET, TCP, 8080)
    assert [(d.cookie, d.rqueue, d.local_addr) for d in found] == [(7, 3, "127.0.0.1"), (8, 0, "127.0.0.1")]
    dump = diag.ListenerDump(TCP, socket.AF_INET, replies=[(VALID_REPLY, off) for off in offsets])
    assert dump.by_endpoint() == {diag.wire_endpoint(TCP, socket.AF_INET, "127.0.0.1", 8080): {7: 3, 8: 0}}


def test_a_reply_of_another_family_is_not_a_listener_of_this_one():
    data = netlink(SOCK_DIAG_BY_FAMILY, inet_diag_msg(family=17)) + netlink(DONE, struct.pack("=i", 0))
    offsets, _ = diag.parse_replies(data, "dump")
    assert diag.decode_listeners([(data, off) for off in offsets], socket.AF_INET, TCP, None) == []
    assert diag.ListenerDump(TCP, socket.AF_INET, replies=[(data, off) for off in offsets]).by_endpoint() == {}


@pytest.mark.parametrize("err", [-(2**31), 2**31 - 1, 1, -5000])
def test_an_error_the_kernel_has_not_is_a_bad_message(err):
    with pytest.raises(OSError, match="Bad message"):
        diag.parse_replies(netlink(DONE, struct.pack("=i", err)), "dump")


@given(replies)
def test_any_reply_parses_to_listeners_of_the_dump_or_is_an_oserror(data):
    """What the kernel sends back, truncated, of wrong lengths, with unknown attributes, of another
    family: an OSError (which every reader of sock_diag handles), or listeners of the family,
    protocol and port asked for."""
    try:
        offsets, _ = diag.parse_replies(data, "dump")
    except OSError as e:
        assert str(e).startswith("[Errno") and "\n" not in str(e)
        return
    assert all(0 <= off and off + NLMSG.size + INET_DIAG_MSG.size <= len(data) for off in offsets)
    got = [(data, off) for off in offsets]
    for family in (socket.AF_INET, socket.AF_INET6):
        for proto in (TCP, UDP):
            for d in diag.decode_listeners(got, family, proto, None) + diag.decode_listeners(got, family, proto, 8080):
                assert d.family == family and 0 <= d.local_port < 65536 and d.address
            dump = diag.ListenerDump(proto, family, replies=got)
            assert all(key[1] == family for key in dump.by_endpoint()) and dump.fingerprint() is not None
