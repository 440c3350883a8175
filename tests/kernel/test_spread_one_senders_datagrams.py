"""balance = "datagram" on the real kernel: one sender (one source address and
port) whose datagrams the hash would put on one member is spread over the
members by their weights, datagram by datagram; what keeps a flow together
(flow affinity, QUIC routing, a TCP connection) refuses it in one line."""

from __future__ import annotations

import collections
import json
import socket

import pytest
from rpctl.cli.demo import worker as demo_worker

from tests.support.cli import assert_one_error_line
from tests.support.traffic import shares

pytestmark = pytest.mark.kernel

WEIGHTS = (1, 2, 3, 4)
DATAGRAMS = 100_000
TOLERANCE = 0.02  # of each share, in points


def _one_sender(members, count: int = DATAGRAMS, batch: int = 1000) -> collections.Counter:
    """`count` datagrams from one client socket (one source address and port): received per member."""
    counts: collections.Counter = collections.Counter()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
        c.bind(("127.0.0.1", 0))
        for start in range(0, count, batch):
            for _ in range(min(batch, count - start)):
                c.sendto(b"x", (members.host, members.port))
            members.drain_queues(counts)
    members.drain_queues(counts)
    assert sum(counts.values()) == count, f"{sum(counts.values())} of {count} datagrams arrived: {dict(counts)}"
    return counts


def _group(rpctl, members, *options) -> dict:
    """Members w0..w3 weighted 1:2:3:4, registered with `options`: the group's status."""
    for i, weight in enumerate(WEIGHTS):
        rpctl.ok(*members.register_args(f"w{i}", members.add(), weight=weight), *options)
    (group,) = json.loads(rpctl.ok("status", "--json"))["groups"]
    return group


def _status(rpctl) -> dict:
    (group,) = json.loads(rpctl.ok("status", "--json"))["groups"]
    return group


def test_one_senders_datagrams_spread_by_the_weights(netns, rpctl, make_members):
    members = make_members(proto="udp")
    group = _group(rpctl, members, "--balance", "datagram")
    assert group["balance"] == "datagram" and group["flow_table"] is None, group
    assert "mode weighted, datagram balance" in rpctl.ok("status")

    counts = _one_sender(members)
    total = sum(WEIGHTS)
    for i, (share, weight) in enumerate(zip(shares(counts, len(WEIGHTS)), WEIGHTS)):
        assert abs(share - weight / total) <= TOLERANCE, f"w{i}: {share:.4f} vs {weight / total} ({dict(counts)})"
    # Every datagram on the group's short cut: its slot member, none by a flow.
    selected = {m["name"]: (m["selected"], m["flow_datagrams"]) for m in _status(rpctl)["members"]}
    assert selected == {f"w{i}": (counts[i], 0) for i in range(len(WEIGHTS))}, selected


def test_the_hash_puts_one_sender_on_one_member(netns, rpctl, make_members):
    members = make_members(proto="udp")
    group = _group(rpctl, members, "--balance", "hash")
    assert group["balance"] == "hash" and group["flow_table"] is not None, group
    counts = _one_sender(members)
    assert len(counts) == 1, f"one sender's datagrams reached {dict(counts)}"


def test_a_gone_members_share_goes_to_the_others_by_one_draw(netns, rpctl, make_members):
    """w3 (weight 4) closes its socket and no one publishes: the datagrams whose draw
    lands on its slots go on to the shared program, which re-hashes the same draw over
    the others (1:2:3).  Drawing again there would take most of them on a first slot
    of its own, not counted as slot misses."""
    members = make_members(proto="udp")
    _group(rpctl, members, "--balance", "datagram")
    members.socks[3].close()
    counts = _one_sender(members)
    assert counts[3] == 0
    for i, (share, weight) in enumerate(zip(shares(counts, 3), WEIGHTS[:3])):
        assert abs(share - weight / 6) <= TOLERANCE, f"w{i}: {share:.4f} vs {weight / 6:.4f} ({dict(counts)})"
    group = _status(rpctl)
    misses, fallback = group["counters"]["slot_misses"], sum(m["fallback"] for m in group["members"])
    assert abs(misses / DATAGRAMS - 0.4) <= TOLERANCE, f"{misses} slot misses of {DATAGRAMS}"
    assert fallback == misses, (fallback, misses)


@pytest.mark.parametrize("options, words", [
    (("--balance", "datagram", "--flow-affinity"), "flow affinity keeps a flow on its member: choose one"),
    (("--balance", "datagram", "--flow-table-size", "1024"), "datagram balance keeps no flows"),
    (("--balance", "datagram", "--quic"), "not with QUIC routing"),
])
def test_what_keeps_a_flow_together_refuses_datagram_balance(netns, rpctl, make_members, options, words):
    members = make_members(proto="udp")
    code, _, err = rpctl(*members.register_args("w0", members.add()), *options)
    assert code == 4 and words in assert_one_error_line(err), (code, err)
    assert json.loads(rpctl.ok("status", "--json"))["groups"] == [], "a refused group was made"


def test_a_tcp_group_and_a_group_of_the_other_balance_refuse_it(netns, rpctl, make_members):
    tcp = make_members(proto="tcp")
    code, _, err = rpctl(*tcp.register_args("t0", tcp.add()), "--balance", "datagram")
    assert code == 4 and "datagram balance is for UDP groups; this socket is TCP" in assert_one_error_line(err)

    udp = make_members(proto="udp", port=tcp.port + 1)
    rpctl.ok(*udp.register_args("u0", udp.add()), "--balance", "datagram")
    code, _, err = rpctl(*udp.register_args("u1", udp.add()), "--balance", "hash")
    line = assert_one_error_line(err)
    assert code == 7 and "was made with datagram balance (no flow affinity); --balance=hash differs" in line, line
    assert [m["name"] for m in _status(rpctl)["members"]] == ["u0"]


def test_a_file_makes_a_datagram_group_and_keeps_its_balance(netns, rpctl, tmp_path):
    """balance = "datagram" in the file makes the group so; a file that says "hash"
    for the live group is refused (exit 7, one line) and leaves it as it is."""
    from rpctl.controller.kernel import discover

    port = 7190
    procs = [demo_worker.spawn(f"s{i}", f"127.0.0.1:{port}", proto="udp")[0] for i in range(2)]
    try:
        exe = discover.identity(procs[0].pid).exe
        syslog = (f'[[group]]\nname = "syslog"\nlisten = "udp:127.0.0.1:{port}"\n'
                  f'adopt = {{ exe = "{exe}" }}\nnames = "s-{{i}}"\n')
        path = tmp_path / "rpctl.toml"
        path.write_text(syslog + 'balance = "datagram"\n')
        out = rpctl.ok("apply", "-c", path)
        assert "group syslog: create it for udp:127.0.0.1:7190 with balance datagram\n" in out, out
        assert _status(rpctl)["balance"] == "datagram"
        assert rpctl.ok("apply", "-c", path) == "group syslog: up to date\n"

        path.write_text(syslog + 'balance = "hash"\n')
        code, _, err = rpctl("apply", "-c", path)
        assert code == 7 and assert_one_error_line(err) == (
            "rpctl: group syslog: balance is datagram in the kernel and hash in the file; a group's creation "
            "options are fixed (`rpctl unload --group syslog` first, then apply again to make it anew), the "
            "group is left as it is"), err
        group = _status(rpctl)
        assert group["balance"] == "datagram" and len(group["members"]) == 2, group
    finally:
        for proc in procs:
            demo_worker.stop(proc, timeout=1)
