"""UDP flow affinity on the real kernel: the flow table keeps every flow on
its member through drains, weight changes and the closing of another
member's socket; only new flows follow the weights."""

from __future__ import annotations

import ctypes
import json
import mmap
import socket
import struct
import sys
import time

import pytest
from rpctl.cli.metrics_families import families
from rpctl.controller.contract import abi
from rpctl.controller.kernel import bpfsys
from rpctl.controller.read.views import read_views
from rpctl.controller.store.group import Group

from tests.support.metrics import by_member, samples, scrape
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


def _flows_placed(rpctl, members, flows, count, n_flows, seed, *options):
    """`count` members w0.. registered with `options`, then `n_flows` fixed
    flows each sending once: the flows and where each went."""
    _register(rpctl, members, count, *options)
    clients = flows(members, n_flows, seed)
    return clients, clients.placements()


def _on(placed: dict, member: int) -> list:
    return [flow for flow, i in placed.items() if i == member]


def test_drain_and_weight_change_move_no_flow(netns, rpctl, make_members, flows):
    members = make_members(proto="udp")
    clients, first = _flows_placed(rpctl, members, flows, 4, 400, 1, "--flow-idle-timeout", "4")
    per_member = [len(_on(first, i)) for i in range(4)]
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
    # A wait shorter than the flows' idle timeout: exit 8, saying what is left.
    code, _, err = rpctl("drain", "w0", "--wait", "--timeout", "0.5")
    assert code == 8 and f"{per_member[0]} live flows after 0.5s" in err, err
    # Its flows go quiet: the drained member is drained once they are idle.
    started = time.monotonic()
    code, _, err = rpctl("drain", "w0", "--wait", "--timeout", "30")
    assert code == 0, err
    assert time.monotonic() - started >= 2, "returned while w0 still had live flows"
    assert f"{per_member[0]} live flows" in err, err
    assert _members(rpctl)["w0"]["state"] == "drained"


def test_a_member_closing_its_socket_has_its_flows_placed_again(netns, rpctl, make_members, flows):
    members = make_members(proto="udp")
    clients, first = _flows_placed(rpctl, members, flows, 4, 400, 2)
    orphans = _on(first, 3)
    members.socks[3].close()
    second = clients.placements()
    assert moved(first, second) == len(orphans), "only the closed member's flows move"
    assert all(second[flow] != 3 for flow in orphans)
    by_name = _members(rpctl)
    assert by_name["w3"]["state"] == "gone"
    assert sum(m["flows_reassigned"] for m in by_name.values()) == len(orphans)
    # Placed again once: from then on they stay where they went.
    assert moved(second, clients.placements()) == 0
    assert sum(m["flows_reassigned"] for m in _members(rpctl).values()) == len(orphans)


def test_a_new_socket_at_a_freed_index_does_not_inherit_flows(netns, rpctl, make_members, flows):
    members = make_members(proto="udp")
    clients, first = _flows_placed(rpctl, members, flows, 2, 200, 3)
    old = _on(first, 1)
    rpctl.ok("unregister", "w1")
    # Before any of w1's flows sends again, a new socket takes index 1.
    rpctl.ok(*members.register_args("w2", members.add()))
    assert _members(rpctl)["w2"]["index"] == 1
    second = clients.placements()
    assert all(second[flow] == 0 for flow in _on(first, 0)), "w0's flows stay"
    # w1's flows are placed again by the weights (some land on index 1 again,
    # now w2's socket), none follows its old entry.
    by_name = _members(rpctl)
    assert by_name["w2"]["flow_datagrams"] == 0
    assert sum(m["flows_reassigned"] for m in by_name.values()) == len(old) > 0
    assert moved(second, clients.placements()) == 0


def test_ipv6_flows_stay_through_a_drain(netns, rpctl, make_members, flows):
    members = make_members(proto="udp", family=socket.AF_INET6)
    clients, first = _flows_placed(rpctl, members, flows, 3, 300, 4)
    assert len(set(first.values())) == 3
    rpctl.ok("drain", "w1")
    assert moved(first, clients.placements()) == 0
    fresh = udp_datagrams(members, 1000, seed=9)
    assert sum(fresh.values()) == 1000 and fresh[1] == 0
    w1 = _members(rpctl)["w1"]
    assert w1["state"] == "draining" and w1["flows"] == len(_on(first, 1))
    # The exporter shows what status shows (the fresh datagrams' flows are live too).
    got = scrape(families(read_views()))
    group = _group(rpctl)
    assert by_member(got["rpctl_member_flows"]) == {m["name"]: m["flows"] for m in group["members"]}
    assert list(samples(got["rpctl_group_flow_table_entries"]).values()) == [group["flow_table"]["entries"]]
    assert 1000 < group["flow_table"]["entries"] <= 1300


def test_a_full_flow_table_still_places_by_weights_and_counts_evictions(netns, rpctl, make_members):
    members = make_members(proto="udp")
    for i in range(4):
        rpctl.ok(*members.register_args(f"w{i}", members.add(), weight=i + 1), "--flow-table-size", "256")
    n = 8000
    counts = udp_datagrams(members, n, seed=10)
    assert sum(counts.values()) == n, "a datagram was dropped"
    for i, (share, target) in enumerate(zip(shares(counts, 4), [0.1, 0.2, 0.3, 0.4])):
        assert abs(share - target) <= 0.015, f"w{i}: {share:.4f} vs {target} ({dict(counts)})"
    group = _group(rpctl)
    by_name = {m["name"]: m for m in group["members"]}
    # Every datagram was a new flow: remembered, or (its hash that of a
    # remembered flow) sent along that flow.
    hits = sum(m["flow_datagrams"] for m in by_name.values())
    created = sum(m["flows_created"] for m in by_name.values())
    assert created + hits == n and hits < n // 100, (created, hits)
    # 256 flows fill the table; every flow after them, in the 30 s its
    # flows stay live, took the way of a live flow: one eviction each.
    assert group["flow_table"]["size"] == 256 and group["flow_table"]["entries"] == 256
    assert group["counters"]["flow_evictions"] == created - 256


def test_a_full_set_evicts_flows_seen_once_before_flows_seen_again(netns, rpctl, make_members, flows):
    # 256 flows in sets of 8: 48 sessions (two datagrams each, so seen
    # again), then 4,000 one-shot flows that fill every set many times over.
    # Evicting by age alone would give the sessions' ways away first: they
    # are the oldest in every set.
    members = make_members(proto="udp")
    _register(rpctl, members, 4, "--flow-table-size", "256")
    sessions = flows(members, 48, seed=3)
    first = sessions.placements()
    assert sessions.placements() == first
    # Only w3 takes new flows now: a session placed again would move to it.
    rpctl.ok("weights", "w0=0", "w1=0", "w2=0")
    counts = udp_datagrams(members, 4000, seed=11)
    assert sum(counts.values()) == 4000, "a datagram was dropped"
    before = _members(rpctl)
    group = _group(rpctl)
    assert group["flow_table"]["entries"] == 256
    assert group["counters"]["flow_evictions"] > 3000, group["counters"]
    assert moved(first, sessions.placements()) == 0
    after = _members(rpctl)
    followed = sum(after[n]["flow_datagrams"] - before[n]["flow_datagrams"] for n in after)
    created = sum(after[n]["flows_created"] + after[n]["flows_reassigned"]
                  - before[n]["flows_created"] - before[n]["flows_reassigned"] for n in after)
    assert (followed, created) == (48, 0)


# Ways of one set as the test writes them: (age in ticks, seen again,
# orphaned), and the way a new flow must take, by rp_flow_victim's order:
# idle, else orphaned, else seen once, else seen again; the oldest of a kind,
# the first on a tie.
IDLE = object()  # an age past the idle timeout (more than one: older)
VICTIMS = [
    ("oldest of flows seen again", [(10, 1, 0), (50, 1, 0), (30, 1, 0), (70, 1, 0),
                                    (20, 1, 0), (60, 1, 0), (40, 1, 0), (0, 1, 0)], 3),
    ("one seen once before older ones seen again", [(10, 1, 0), (50, 1, 0), (30, 1, 0), (70, 1, 0),
                                                    (20, 1, 0), (60, 0, 0), (40, 1, 0), (0, 0, 0)], 5),
    ("an orphan before flows seen once", [(10, 1, 0), (50, 0, 0), (30, 1, 1), (70, 1, 0),
                                          (20, 1, 0), (60, 0, 0), (40, 1, 0), (0, 1, 0)], 2),
    ("an idle flow before orphans", [(10, 1, 0), (50, 0, 0), (30, 1, 1), (70, 1, 1),
                                     (20, 1, 0), (60, 0, 0), (IDLE, 1, 0), (0, 1, 0)], 6),
    ("the older of two idle flows", [(10, 1, 1), (IDLE, 1, 0), (30, 1, 1), (70, 0, 0),
                                     ((IDLE, 1), 1, 0), (60, 0, 0), (40, 1, 0), (0, 1, 0)], 4),
    ("the first of equals", [(40, 1, 0)] * 8, 0),
    ("a flow refreshed after the program read the clock is the youngest",
     [(-30, 0, 0), (-5, 0, 0), (-60, 0, 0), (-20, 0, 0), (-1, 0, 0), (-90, 0, 0), (-10, 0, 0), (-40, 0, 0)], 4),
]


def test_a_full_set_gives_a_new_flow_the_way_the_eviction_order_names(netns, rpctl, make_members, flows):
    """The victim of a full set, way by way: a set written here with eight
    flows of chosen ages, kinds and incarnations, then a datagram of a flow
    it does not hold; the way that flow lands in is the one the order names,
    and only a live flow's way given away counts as an eviction."""
    from rpctl.controller.kernel import jiffies

    members = make_members(proto="udp")
    clients, _ = _flows_placed(rpctl, members, flows, 2, 1, 4, "--flow-table-size", "256")
    name = _group(rpctl)["name"]
    with Group.open(name) as g:
        table = g.maps["flows"]
        sets = {k: table.get(k, abi.RpFlowSet) for k in range(256 // abi.RP_FLOW_WAYS)}
        ((k, tag),) = [(k, w.tag) for k, s in sets.items() for w in s.way if w.tag]
        idle = g.ctl().flow_idle_ticks
        live = g.maps["gens"].get(g.ctl().gen & 1, abi.RpGen).incarnation[0]
        for what, ways, victim in VICTIMS:
            now = jiffies.now()
            written = abi.RpFlowSet()
            for i, (age, again, orphan) in enumerate(ways):
                if age is IDLE or isinstance(age, tuple):
                    age = idle + 5000 * (2 if isinstance(age, tuple) else 1)
                written.way[i] = abi.RpFlow(tag=(tag + 2 * (i + 1)) & 0xFFFFFFFF | 1, member=0,
                                            flags=abi.RP_FLOW_AGAIN if again else 0,
                                            incarnation=live + 1000 if orphan else live,
                                            seen=(now - age) & 0xFFFFFFFF)
            table.put(k, written)
            evictions = _group(rpctl)["counters"]["flow_evictions"]
            clients.placements()  # one datagram of the flow, new to its set now
            got = table.get(k, abi.RpFlowSet)
            landed = [i for i, w in enumerate(got.way) if w.tag == tag]
            assert landed == [victim], f"{what}: the new flow took way {landed}, not {victim}"
            live_victim = ways[victim][0] is not IDLE and not isinstance(ways[victim][0], tuple) \
                and not ways[victim][2]
            assert _group(rpctl)["counters"]["flow_evictions"] - evictions == int(live_victim), what


def test_group_options_are_fixed_at_creation(netns, rpctl, make_members):
    members = make_members(proto="udp")
    rpctl.ok(*members.register_args("w0", members.add()), "--flow-table-size", "1024", "--flow-idle-timeout", "5")
    group = _group(rpctl)
    assert group["flow_table"]["size"] == 1024 and group["flow_table"]["idle_timeout"] == 5
    # The same options again, or none: accepted.
    rpctl.ok(*members.register_args("w1", members.add()), "--flow-table-size", "1024")
    rpctl.ok(*members.register_args("w2", members.add()))
    code, _, err = rpctl(*members.register_args("w3", members.add()), "--no-flow-affinity")
    assert code == 7 and "--flow-affinity=off differs" in err and len(err.splitlines()) == 1, err
    assert "w3" not in _members(rpctl)

    tcp = make_members(port=7001)
    code, _, err = rpctl(*tcp.register_args("t0", tcp.add()), "--flow-table-size", "1024")
    assert code == 4 and "for UDP groups" in err, err


def test_array_maps_hold_their_values_from_a_page_boundary(netns, rpctl, make_members, flows):
    """Every array map of a group is made mappable for the layout that comes
    with it (maps.array_flags): its values begin on a page, so ctl is one
    cache line and a flow set two whole ones.  Seen through the mapping: ctl's
    first bytes are its ABI version, and the 64 flows of this test are 64
    tags at way offsets of the flow table's sets, counted from the page."""
    members = make_members(proto="udp")
    clients, _ = _flows_placed(rpctl, members, flows, 2, 64, 9, "--flow-table-size", "4096")
    group = Group.open(_group(rpctl)["name"])
    for name, m in group.maps.items():
        want = bpfsys.BPF_F_MMAPABLE if m.spec.map_type == abi.MAP_TYPE_ARRAY else 0
        assert bpfsys.map_info(m.fd).map_flags & bpfsys.BPF_F_MMAPABLE == want, name
    with mmap.mmap(group.maps["ctl"].fd, mmap.PAGESIZE, prot=mmap.PROT_READ) as ctl:
        assert struct.unpack_from("=I", ctl, 0)[0] == abi.RP_ABI_VERSION
    table = 4096 // abi.RP_FLOW_WAYS * ctypes.sizeof(abi.RpFlowSet)
    way = ctypes.sizeof(abi.RpFlow)
    with mmap.mmap(group.maps["flows"].fd, table, prot=mmap.PROT_READ) as sets:
        tags = [struct.unpack_from("=I", sets, at)[0] for at in range(0, table, way)]
    assert sum(1 for t in tags if t) == 64
    assert all(t & 1 for t in tags if t), "a tag is md->hash | 1: odd"
    group.close()


def test_a_group_without_flow_affinity_moves_flows_as_before(netns, rpctl, make_members, flows):
    members = make_members(proto="udp")
    clients, first = _flows_placed(rpctl, members, flows, 4, 400, 5, "--no-flow-affinity")
    assert _group(rpctl)["flow_table"] is None
    rpctl.ok("drain", "w0")
    assert moved(first, clients.placements()) == len(_on(first, 0))
    assert all(m["flows"] is None for m in _members(rpctl).values())


def test_restart_of_a_udp_member_waits_for_its_flows_to_end(launch, rpctl):
    from tests.support.launched import members as members_of
    from tests.support.launched import wait_until

    port = 7130
    names = {"worker-1", "worker-2"}
    worker = [sys.executable, "-m", "rpctl.cli.demo.worker", "--name", "$RPCTL_MEMBER", "--proto", "udp"]
    r = launch(["--group", "dns", "-n", 2, "--proto", "udp", "--listen", f"127.0.0.1:{port}",
                "--flow-idle-timeout", "1.5"], worker)
    r.wait_members(rpctl, names, group="dns")
    clients = []
    for i in range(60):
        c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        c.bind((f"127.0.1.{i + 1}", 30000 + i))
        c.settimeout(5)
        clients.append(c)
    try:
        def ask() -> dict:
            for c in clients:
                c.sendto(b"x", ("127.0.0.1", port))
            return {c.getsockname(): c.recv(64).decode().strip() for c in clients}

        first = ask()
        on_one = [flow for flow, name in first.items() if name == "worker-1"]
        assert on_one and len(on_one) < len(clients), first
        old_pid = members_of(rpctl, "dns")["worker-1"]["pid"]
        restart = rpctl.subprocess("restart", "worker-1", "--group", "dns", "--drain-timeout", "30")
        # While its flows keep talking, worker-1 drains but keeps them, and
        # the restart waits.
        wait_until("worker-1 draining", lambda: members_of(rpctl, "dns")["worker-1"]["state"] == "draining")
        talking_until = time.monotonic() + 3
        while time.monotonic() < talking_until:
            assert ask() == first, "a flow moved while its member drained"
            time.sleep(0.2)
        assert restart.poll() is None, "the restart did not wait for worker-1's flows"
        assert members_of(rpctl, "dns")["worker-1"]["pid"] == old_pid
        # Once they are silent past the idle timeout, the restart goes on.
        _, err = restart.communicate(timeout=60)
        assert restart.returncode == 0, err
        assert f"{len(on_one)} live flows" in err, err
        new = members_of(rpctl, "dns")["worker-1"]
        assert new["pid"] != old_pid and new["state"] == "active"
    finally:
        for c in clients:
            c.close()
