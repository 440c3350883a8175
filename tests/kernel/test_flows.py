"""UDP flow affinity on the real kernel: the flow table keeps every flow on
its member through drains, weight changes and the closing of another
member's socket; only new flows follow the weights."""

from __future__ import annotations

import json
import socket
import time

import pytest

from tests.support.traffic import UdpFlows, moved, shares, udp_datagrams

pytestmark = pytest.mark.kernel


def _group(rpctl) -> dict:
    (group,) = json.loads(rpctl.ok("status", "--json"))["groups"]
    return group


def _members(rpctl) -> dict[str, dict]:
    return {m["name"]: m for m in _group(rpctl)["members"]}


@pytest.fixture
def flows(make_members):
    made = []

    def make(members, count, seed=1):
        f = UdpFlows(members, count, seed)
        made.append(f)
        return f

    yield make
    for f in made:
        f.close()


def _register(rpctl, members, count, *options):
    for i in range(count):
        rpctl.ok(*members.register_args(f"w{i}", members.add()), *options)


def test_drain_and_weight_change_move_no_flow(netns, rpctl, make_members, flows):
    members = make_members(proto="udp")
    _register(rpctl, members, 4, "--flow-idle-timeout", "4")
    clients = flows(members, 400)
    first = clients.placements()
    per_member = [list(first.values()).count(i) for i in range(4)]
    assert min(per_member) >= 60, f"400 flows over 4 members: {per_member}"

    rpctl.ok("drain", "w0")
    assert moved(first, clients.placements()) == 0, "a drain moved live flows"
    fresh = udp_datagrams(members, 2000, seed=7)
    assert sum(fresh.values()) == 2000 and fresh[0] == 0, f"new flows reached the drained member: {dict(fresh)}"

    rpctl.ok("weights", "w1=2")
    assert moved(first, clients.placements()) == 0, "a weight change moved live flows"
    n = 8000
    counts = udp_datagrams(members, n, seed=8)
    assert sum(counts.values()) == n
    for i, (share, target) in enumerate(zip(shares(counts, 4), [0, 0.5, 0.25, 0.25])):
        assert abs(share - target) <= 0.015, f"w{i}: {share:.4f} vs {target} ({dict(counts)})"
    assert moved(first, clients.placements()) == 0

    w0 = _members(rpctl)["w0"]
    assert w0["state"] == "draining" and w0["flows"] == per_member[0], w0
    # Its flows go quiet: the drained member is drained once they are idle.
    started = time.monotonic()
    code, out, err = rpctl("drain", "w0", "--wait", "--timeout", "30")
    assert code == 0, err
    assert time.monotonic() - started >= 2, "returned while w0 still had live flows"
    assert f"{per_member[0]} live flows" in err, err
    assert _members(rpctl)["w0"]["state"] == "drained"
