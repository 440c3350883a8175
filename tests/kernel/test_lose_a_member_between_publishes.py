"""A member whose socket closed since the last publish: its share spreads
over the live members in proportion to their weights (docs/decisions/0009)."""

from __future__ import annotations

import collections
import json

import pytest

from tests.support.traffic import shares, tcp_placements, tcp_sources

pytestmark = pytest.mark.kernel

N = 12_000


@pytest.mark.parametrize("weights, gone", [
    ((3, 2, 1, 1), 1),  # the weight-2 member: its 2/7 of the traffic must go 3:1:1
    ((1, 1, 1), 2),     # 3 -> 2 equal members: 50/50 (the live-list walk gave about 55/45)
])
def test_gone_members_share_follows_the_survivors_weights(netns, rpctl, make_members, weights, gone):
    members = make_members()
    for i, weight in enumerate(weights):
        rpctl.ok(*members.register_args(f"w{i}", members.add(), weight=weight))
    sources = tcp_sources(N, seed=21)
    before = tcp_placements(members, sources)
    assert len(before) == N

    members.socks[gone].close()  # no publish: its slots still name it
    after = tcp_placements(members, sources)
    assert len(after) == N, "every connection reached a live member"

    # Overall: the survivors' shares are their weights' shares among themselves.
    got = shares(collections.Counter(after.values()), len(weights))
    live_weight = sum(w for i, w in enumerate(weights) if i != gone)
    report = ", ".join(f"w{i}={s:.4f}" for i, s in enumerate(got))
    assert got[gone] == 0
    for i, weight in enumerate(weights):
        if i != gone:
            target = weight / live_weight
            assert abs(got[i] - target) <= 0.02, f"w{i}: {got[i]:.4f} vs {target:.4f} ({report})"

    # A live member's connections stay where they were; only the gone
    # member's move, and they too follow the weights.
    moved = [src for src in sources if before[src] == gone]
    assert all(after[src] == before[src] for src in sources if before[src] != gone)
    spread = shares(collections.Counter(after[src] for src in moved), len(weights))
    for i, weight in enumerate(weights):
        if i != gone:
            target = weight / live_weight
            assert abs(spread[i] - target) <= 0.05, f"moved to w{i}: {spread[i]:.4f} vs {target:.4f}"

    # Counted as fallbacks of the members that took them, and as slot misses.
    (group,) = json.loads(rpctl.ok("status", "--json"))["groups"]
    fallbacks = sum(m["fallback"] for m in group["members"])
    assert group["counters"]["slot_misses"] >= len(moved)
    assert len(moved) <= fallbacks <= group["counters"]["slot_misses"]
    print(f"after closing w{gone} without a publish, over {N}: {report}; "
          f"{len(moved)} moved: " + ", ".join(f"w{i}={s:.4f}" for i, s in enumerate(spread)))


def test_a_gone_members_share_skips_a_throttled_member(netns, rpctl, make_members):
    """In an adaptive group the connections of a closed member's slots re-hash
    over the members rpctl serve has not throttled, as the throttled member's
    own connections do.  The throttle is written here as serve writes it
    (controller/ops/serve.py), with a lease that outlasts the test."""
    import time

    from rpctl.controller.store import group as groups
    from rpctl.controller.store.state import Layout
    from rpctl.controller.tables.adaptive import Reason

    members = make_members()
    for i in range(6):
        rpctl.ok(*members.register_args(f"w{i}", members.add()), "--group", "a")
    sources = tcp_sources(6000, seed=22)
    before = tcp_placements(members, sources)
    with groups.Group.open("a", Layout(root=None)) as g:
        groups.set_adaptive(g, True)
        groups.put_throttle(g, {1: Reason(9, 0)}, time.monotonic_ns() + 60 * 10**9)
    members.socks[0].close()  # no publish: its slots still name it
    after = tcp_placements(members, sources)
    assert len(after) == len(sources), "every connection reached a live member"

    moved = collections.Counter(after[src] for src in sources if before[src] == 0)
    # Only a connection whose 8 re-hashes all meet w0 or w1 ((2/6)^8, about
    # 0.015 % of them) may still reach the throttled member, by the live-list
    # walk or its own slot; each of the four others takes about a quarter.
    assert 0 not in moved and moved[1] <= 1, dict(moved)
    for i in range(2, 6):
        assert abs(moved[i] / sum(moved.values()) - 0.25) <= 0.06, dict(moved)
    assert sum(1 for src in sources if after[src] == 1) <= 2
