"""The program's QUIC routing, datagram by datagram: hand-made QUIC headers to four
plain UDP members of a `--quic` group, from fresh source ports (fresh flows).

Which packets a server id routes (Handshake of versions 1 and 2, short headers),
which it does not (Initial: the client chose the id; unroutable config rotation;
too short to be QUIC), a draining member keeping its packets, unknown ids counted,
a throttled member (adaptive) keeping its ids' packets and its flows but no new flow,
ids read from page fragments (a corked datagram) as from the linear part;
for 1- and 4-byte server ids, over IPv4 and IPv6.
"""

from __future__ import annotations

import collections
import contextlib
import json
import socket
import time

import pytest
from rpctl.controller.tables import quic

pytestmark = pytest.mark.kernel

PORT = 7453
SIDS = {1: ["0a", "0b", "0c", "0d"], 4: ["0a000001", "0b000002", "0c000003", "ffffffff"]}
V1, V2 = 0x00000001, 0x6B3343CF
FRESH = 48  # datagrams (each from its own source port) per kind


def short_header(sid: bytes) -> bytes:
    return bytes([0x40]) + quic.make_cid(sid, 4 + 1 + len(sid) + 3) + bytes(24)


def long_header(kind: int, version: int, sid: bytes) -> bytes:
    dcid, scid = quic.make_cid(sid, 4 + 1 + len(sid) + 3), bytes(8)
    return (bytes([0xC0 | kind << 4]) + version.to_bytes(4, "big") + bytes([len(dcid)]) + dcid
            + bytes([len(scid)]) + scid + bytes(40))


def sid_bytes(text: str) -> bytes:
    return bytes.fromhex(text)


@pytest.fixture
def quic_members(make_members, rpctl):
    def make(length: int, family: int = socket.AF_INET):
        m = make_members(proto="udp", port=PORT, family=family)
        for i, sid in enumerate(SIDS[length]):
            sock = m.add()
            argv = m.register_args(f"w{i}", sock) + ["--quic", "--quic-server-id", sid, "--group", "q"]
            if length != 1:
                argv += ["--quic-server-id-length", length]
            rpctl.ok(*argv)
        return m

    return make


def send_fresh(m, payload: bytes, count: int = FRESH, keep: contextlib.ExitStack | None = None,
               corked: int = 0) -> collections.Counter:
    """`count` datagrams, each from a new source port; which member got each.
    The sockets stay open until all are sent (until `keep` closes, if given):
    no two share a port, so no two share a flow.  `corked`: each datagram is
    sent in two parts, its first `corked` bytes with MSG_MORE."""
    with contextlib.ExitStack() as stack:
        for _ in range(count):
            c = (keep or stack).enter_context(socket.socket(m.family, socket.SOCK_DGRAM))
            if corked:
                c.sendto(payload[:corked], socket.MSG_MORE, (m.host, PORT))
            c.sendto(payload[corked:], (m.host, PORT))
    got: collections.Counter = collections.Counter()
    deadline = time.monotonic() + 5
    while sum(got.values()) < count and time.monotonic() < deadline:
        m.drain_queues(got)
        time.sleep(0.01)
    assert sum(got.values()) == count, f"{count} sent, {dict(got)} received"
    return got


def counters(rpctl) -> tuple[int, dict]:
    """The group's unknown server ids, and the packets routed by id per member."""
    (g,) = json.loads(rpctl.ok("status", "--json", "--group", "q"))["groups"]
    return g["counters"]["quic_unknown_server_id"], {m["name"]: m["quic_routed"] for m in g["members"]}


@pytest.mark.parametrize("length, family", [(1, socket.AF_INET), (4, socket.AF_INET6)])
def test_server_chosen_ids_name_their_member_whatever_the_source_port(quic_members, rpctl, length, family):
    m = quic_members(length, family)
    sids = [sid_bytes(s) for s in SIDS[length]]
    (g,) = json.loads(rpctl.ok("status", "--json", "--group", "q"))["groups"]
    assert g["quic_server_id_length"] == length
    assert [x["quic_server_id"] for x in g["members"]] == SIDS[length]

    with contextlib.ExitStack() as keep:
        assert send_fresh(m, short_header(sids[1]), keep=keep) == {1: FRESH}
        assert send_fresh(m, long_header(2, V1, sids[2]), keep=keep) == {2: FRESH}
        assert send_fresh(m, long_header(3, V2, sids[3]), keep=keep) == {3: FRESH}
    assert counters(rpctl)[1] == {"w0": 0, "w1": FRESH, "w2": FRESH, "w3": FRESH}
    # Each routed packet's 4-tuple became a flow of its member: what a drain waits for.
    (g,) = json.loads(rpctl.ok("status", "--json", "--group", "q"))["groups"]
    assert [x["flows"] for x in g["members"]] == [0, FRESH, FRESH, FRESH]

    # A draining member keeps the packets of its connections.
    rpctl.ok("drain", "w1", "--group", "q")
    assert send_fresh(m, short_header(sids[1])) == {1: FRESH}
    rpctl.ok("undrain", "w1", "--group", "q")

    # Not routed by id: the weights place these (over 4 members, 48 datagrams
    # never all land on one), and no counter moves.
    before = counters(rpctl)
    for payload in (
        long_header(0, V1, sids[2]),                     # Initial: the client chose the id
        long_header(1, V2, sids[2]),                     # Initial of version 2
        long_header(2, 0x0A0A0A0A, sids[2]),             # Handshake of a version the program does not know
        bytes([0xE0 | 0x07]) + sids[2] + bytes(30),      # short header, config rotation 0b111: unroutable
        bytes([0x40, 0x07]) + sids[2][:1],               # too short to carry an id
    ):
        got = send_fresh(m, payload)
        assert len(got) > 1, f"{payload[:8].hex()}: {dict(got)}"
    assert counters(rpctl) == before

    # An id of no member: the weights place it, and it is counted.
    unknown = bytes(len(sids[0]) - 1) + b"\x55"
    assert len(send_fresh(m, short_header(unknown))) > 1
    assert counters(rpctl)[0] == FRESH


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
def test_ids_outside_the_linear_part_of_the_packet_are_read_too(quic_members, rpctl, family):
    """The program reads a connection id in place when the skb's linear part
    holds it, else through bpf_skb_load_bytes (packets a NIC or GRO left in
    page fragments).  A corked datagram takes the second path: on loopback,
    which does scatter-gather, ip_append_data puts the bytes of the second
    send in a page fragment, so only the first byte of the QUIC header is
    linear.  Without that path these packets would be "too short to carry
    an id" and go by the weights."""
    m = quic_members(4, family)
    sids = [sid_bytes(s) for s in SIDS[4]]
    with contextlib.ExitStack() as keep:
        assert send_fresh(m, short_header(sids[1]), keep=keep, corked=1) == {1: FRESH}
        assert send_fresh(m, long_header(2, V1, sids[2]), keep=keep, corked=1) == {2: FRESH}
        # Split inside the connection id itself.
        assert send_fresh(m, short_header(sids[3]), keep=keep, corked=3) == {3: FRESH}
    assert counters(rpctl) == (0, {"w0": 0, "w1": FRESH, "w2": FRESH, "w3": FRESH})


def test_an_id_whose_member_closed_its_socket_falls_back_and_is_counted(quic_members, rpctl):
    m = quic_members(1)
    m.socks[2].close()
    got = send_fresh(m, short_header(b"\x0c"))
    assert 2 not in got and sum(got.values()) == FRESH
    assert counters(rpctl)[0] == FRESH


def test_ids_are_unique_and_fixed_by_the_group(quic_members, rpctl, make_members):
    m = quic_members(1)
    extra = m.add()
    code, _, err = rpctl(*m.register_args("w9", extra), "--quic-server-id", "0b", "--group", "q")
    assert code == 4 and "QUIC server id 0b is already the id of member 'w1' in group 'q'" in err
    code, _, err = rpctl(*m.register_args("w9", extra), "--quic-server-id", "100", "--group", "q")
    assert code == 4 and "longer than the group's 1-byte server ids" in err
    code, _, err = rpctl(*m.register_args("w9", extra), "--quic", "--quic-server-id-length", "2", "--group", "q")
    assert code == 7 and "QUIC routing by 1-byte server ids" in err
    # No id asked for: the lowest free one; a replaced socket keeps its member's id.
    out = rpctl.ok(*m.register_args("w9", extra), "--group", "q")
    assert "with QUIC server id 00" in out
    again = m.add()
    assert "with QUIC server id 0c" in rpctl.ok(*m.register_args("w2", again), "--replace", "--group", "q")
    plain = make_members(proto="udp", port=PORT + 1)
    code, _, err = rpctl(*plain.register_args("p0", plain.add()), "--quic-server-id", "01")
    assert code == 4 and "does not route QUIC by server id" in err


def test_a_throttled_member_keeps_its_server_ids_and_flows_and_gets_no_new_flow(quic_members, rpctl):
    """The program's order in an adaptive UDP group: a server id's packets and a
    known flow's go to their member although rpctl serve throttled it; only what
    the weights place (a new flow) skips it.  The throttle is written here as
    serve writes it (controller/ops/serve.py), with a lease that outlasts the test."""
    from rpctl.controller.store import group as groups
    from rpctl.controller.store.state import Layout
    from rpctl.controller.tables.adaptive import BYTES, Reason

    m = quic_members(1)
    sids = [sid_bytes(s) for s in SIDS[1]]
    initial = long_header(0, V1, sids[2])  # the client chose its id: never routed by it

    def landed(c: socket.socket, payload: bytes) -> int:
        """Send from `c` (its flow) and say which member got it."""
        c.sendto(payload, (m.host, PORT))
        got: collections.Counter = collections.Counter()
        deadline = time.monotonic() + 5
        while not got and time.monotonic() < deadline:
            m.drain_queues(got)
        (member,) = got
        return member

    with contextlib.ExitStack() as keep:
        known = keep.enter_context(socket.socket(m.family, socket.SOCK_DGRAM))
        assert landed(known, short_header(sids[1])) == 1  # its 4-tuple is now a flow of w1
        with groups.Group.open("q", Layout(root=None)) as g:
            groups.set_adaptive(g, True)
            groups.put_throttle(g, {1: Reason(99999, 0, BYTES)}, time.monotonic_ns() + 60 * 10**9)
        (g,) = json.loads(rpctl.ok("status", "--json", "--group", "q"))["groups"]
        assert g["adaptive"] and [x["throttled"] for x in g["members"]] == [
            None, "queue 99999 bytes, others <= 0 bytes", None, None]
        # A known flow keeps its member: an Initial on it goes where the flow table says.
        assert landed(known, initial) == 1
        # Its server id still routes to it, from any source.
        assert send_fresh(m, short_header(sids[1]), keep=keep) == {1: FRESH}
        # New flows skip it: 96 of them over the other three members.
        got = send_fresh(m, initial, count=2 * FRESH, keep=keep)
        assert 1 not in got and len(got) == 3, dict(got)
        (g,) = json.loads(rpctl.ok("status", "--json", "--group", "q"))["groups"]
        assert g["counters"]["throttle_skips"] > 0
        # Released: new flows reach it again.
        with groups.Group.open("q", Layout(root=None)) as g:
            groups.put_throttle(g, {}, 0)
        got = send_fresh(m, initial, count=2 * FRESH, keep=keep)
        assert got[1] > 0, dict(got)
