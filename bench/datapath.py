"""Data path: the kernel's own account (bpf_stats) of what one selection costs.

Same kind of group for every variant: four TCP listeners on one port (a
port per variant), all in one fresh network namespace, all loaded and
attached before the first round.  With bpf_stats on (BPF_ENABLE_STATS, held
for the run), the kernel adds the time of every run of a program to its
run_time_ns and counts it in run_cnt; each round opens the same CONNECTIONS
connections (one SYN, so one run, each; varied 127/8 sources) to every
variant in turn, rotating the order, and takes the difference of
run_time_ns / run_cnt over the round.  The variants the goals compare (the
floors; rpctl weighted, with and without workers; rpctl's UDP rows; the
paths compared with a group's own program) run on INSTANCES groups each,
merged into one row: the same program on two groups of one run can differ
by over 100 ns.  rpctl's groups are made as rpctl makes them: a group's
program (the short cut) and the program every group shares (decision 0017).

Variants (the reference programs are in bench/datapath.bpf.c):
  return only       floor: returns SK_PASS at once
  select only       floor: one bpf_sk_select_reuseport at hash & 3
  select only, 256  the same floor on a group of 256 listeners (hash & 255)
  + lookups         ladder: + the ctl and generation lookups
  + slot            ladder: + the member from the one-byte slot table
  + counter         ladder: + the member's per-CPU counter
  wide slots        ladder: "+ counter" with a 65,536 x u32 table in its own map
  rpctl weighted    rpctl's program, four members, equal weights
  rpctl drained     the same, one member draining
  rpctl cpu pin     CPU mode, two members pinned to CPUs 0 and 1
  rpctl rss pin     RSS mode on a synthetic 4-queue NIC (Toeplitz over the
                    4-tuple, 128-entry indirection table)
  rpctl adaptive, none throttled / w3 throttled / lease over   an adaptive
                    group, its throttle written as rpctl serve writes it:
                    nobody throttled; w3 throttled while the lease runs (a
                    quarter of connections re-hashed); w3's lease over
  rpctl weighted, 64 / 256   rpctl's program on groups of 64 and 256 members
  workers: select only / rpctl weighted   the same on listeners that
                    worker processes accept from in a loop
  udp select only       floor on four UDP sockets
  udp flow by hash      reference: an LRU hash map keyed by md->hash
  udp flow by 4-tuple   reference: an LRU hash map keyed by the 4-tuple read from the packet
  udp flow in 4-way sets  reference: one-cache-line sets in an array (rpctl's are 8-way)
  udp rpctl, no flows   rpctl's program on a UDP group without flow affinity
  udp rpctl, datagram balance   the same with balance = "datagram": each
                        datagram placed at a random draw (bpf_get_prandom_u32)
  udp rpctl, known flow rpctl's program, datagrams of flows already in its table
  udp flow in 4-way sets, new flows   reference: the 4-way sets, every
                        datagram a new flow inserted
  udp rpctl, new flows  rpctl's program, every datagram a new flow
  ..., full sets        every set of a 256-flow table full: each new flow
                        evicts one
  ..., 16 flows         the flow tables and rpctl with 16 flows taking turns (in cache)
  ..., unaligned        rpctl's program on array maps made as before rpctl
                        made them mappable: values 56 bytes into a cache line
                        (a group's own program: see below)
  ..., own program      rpctl's program with every step in the group's own
                        program, as before the shared program (decision 0017):
                        what handing steps to one shared program costs, on
                        each path
The ladder programs read the live ctl and generation of the "rpctl
weighted" group, so they walk the same table.

Reported: nanoseconds per run (median over rounds), and each variant's
distance to the floors, measured side by side in the same run.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from bench import plots
from bench.common import alternate, median, span, table, write_section

SECTION = "datapath"
MEMBERS = 4
BASE_PORT = 7600
ROUNDS, QUICK_ROUNDS = 9, 1
# Groups per compared variant (the floors, rpctl on its goals' paths).  The
# same program on two groups of one run differed by up to 140 ns, medians of
# 9 rounds (where the kernel happened to put each group's maps, sockets and
# code): one group would be one sample of that placement.
INSTANCES, QUICK_INSTANCES = 3, 1
INSTANCE = " #"  # a variant's second and later groups: "select only #2"
CONNECTIONS, QUICK_CONNECTIONS = 8000, 300
REFERENCE = Path(__file__).resolve().parent / "datapath.bpf.c"
WIDE_SLOTS = 1 << 16
# Long-lived UDP flows of the "known flow" variants: more than the caches
# hold of a flow table's entries at once, fewer than the table holds.
FLOWS, QUICK_FLOWS = 4096, 256
FEW_FLOWS = 16
# The "new flows, full sets" groups' tables: 32 sets, filled before the first
# round (every new flow evicts one).
FULL_TABLE, FILL = 256, 2048
WORKED = "workers: "   # the name of a variant whose listeners worker processes accept from
UNALIGNED = ", unaligned"  # rpctl on array maps whose values start mid-line (_plain_arrays)
OWN = ", own program"  # rpctl's program as a group's own, not shared (decision 0017)
THROTTLED = "w3"       # the member the adaptive variants' throttle names
DATAGRAM_BALANCE = "udp rpctl, datagram balance"


@dataclass
class Variant:
    name: str
    members: object                 # traffic.Members
    prog_fd: int
    group: Optional[str] = None     # rpctl variants: the group, to read its counters back
    shared_fd: Optional[int] = None  # a group on the shared program: that program
    # traffic(variant, count, seed) -> how many connections or datagrams the
    # members took: one program run each.
    traffic: Optional[Callable[[Variant, int, int], int]] = None

    def run_stats(self) -> tuple[int, int]:
        """The group's program's run time and count; a run that jumps to the
        shared program is counted there in full (a tail call stays in one run)."""
        from rpctl.controller.kernel import bpfsys

        info = bpfsys.prog_info(self.prog_fd)
        return info.run_time_ns, info.run_cnt

    def size(self) -> str:
        """Translated instructions / JIT bytes: the group's program's, + the shared program's."""
        from rpctl.controller.kernel import bpfsys

        infos = [bpfsys.prog_info(fd) for fd in (self.prog_fd, self.shared_fd) if fd is not None]
        return " / ".join(" + ".join(f"{n:,}" for n in ns) for ns in (
            [i.xlated_prog_len // 8 for i in infos], [i.jited_prog_len for i in infos]))


def _members(port: int, count: int = MEMBERS, proto: str = "tcp"):
    from tests.support.traffic import Members

    members = Members(port=port, proto=proto)
    for _ in range(count):
        members.add()
    return members


def _reference(name: str, function: str, port: int, stack: contextlib.ExitStack,
               shared: Optional[dict] = None, count: int = MEMBERS, proto: str = "tcp") -> Variant:
    """A reference program on its own group: the sockets in a socket array of
    its own (filled by fd), `shared` maps passed too, the program attached."""
    import ctypes

    from rpctl.controller.contract import abi
    from rpctl.controller.kernel import loader, sockets
    from rpctl.controller.kernel.maps import Map

    members = _members(port, count, proto)
    stack.callback(members.close)
    socks = Map.create(abi.MAP_SPECS["socks"])
    stack.callback(socks.close)
    for i, s in enumerate(members.socks):
        socks.put(i, ctypes.c_uint64(s.fileno()))
    prog_fd = loader.compile_and_load(str(REFERENCE), function, {**(shared or {}), "socks": socks}, migrate=False)
    stack.callback(os.close, prog_fd)
    sockets.attach_program(members.socks[0], prog_fd)
    return Variant(name, members, prog_fd)


def _ladder_maps(group_name: str, stack: contextlib.ExitStack) -> dict:
    """The live ctl and generations of rpctl group `group_name`, a scratch
    counter map, and the weighted table again as 65,536 u32 per generation."""
    from rpctl.controller.contract import abi
    from rpctl.controller.kernel.maps import Map
    from rpctl.controller.store.group import Group
    from rpctl.controller.tables import slot_table

    g = Group.open(group_name)
    stack.callback(g.close)
    counters = Map.create(abi.MAP_SPECS["member_stats"])
    stack.callback(counters.close)
    wide = Map.create(abi.MapSpec("wide_slots", abi.MAP_TYPE_ARRAY, 4, 4, 2 * WIDE_SLOTS))
    stack.callback(wide.close)
    table = slot_table.build_table({i: 1 for i in range(MEMBERS)}, slots=WIDE_SLOTS)
    wide.write_u32s(0, table)
    wide.write_u32s(WIDE_SLOTS, table)
    return {"ctl": g.maps["ctl"], "gens": g.maps["gens"], "member_stats": counters, "wide_slots": wide}


@contextlib.contextmanager
def _plain_arrays():
    """Groups created inside get array maps without BPF_F_MMAPABLE, as rpctl
    made them before: their values start 56 bytes into a cache line
    (maps.array_flags).  For the "unaligned" rows only, on groups' own
    programs (the shared program's slots are made aligned)."""
    from rpctl.controller.kernel import maps

    flags = maps.array_flags
    maps.array_flags = lambda map_type: 0
    try:
        yield
    finally:
        maps.array_flags = flags


@contextlib.contextmanager
def _own_program():
    """Groups created inside get a steering program of their own, as before
    the shared program (decision 0017): for the "own program" rows only."""
    from rpctl.controller.store import lifecycle

    os.environ[lifecycle.OWN_PROGRAM_ENV] = "1"
    try:
        yield
    finally:
        del os.environ[lifecycle.OWN_PROGRAM_ENV]


def _rpctl(name: str, port: int, stack: contextlib.ExitStack, mode: Callable[[str], object],
           count: int = MEMBERS, proto: str = "tcp", options=None, aligned: bool = True, own: bool = False) -> Variant:
    """rpctl's program on a group of `count` members (created with `options`), then `mode(group)`;
    `own`: a program of the group's own rather than the shared one."""
    from rpctl.controller.kernel import bpfsys
    from rpctl.controller.store import group
    from rpctl.controller.store.state import Layout

    members = _members(port, count, proto)
    stack.callback(members.close)
    # Unaligned maps are a group's own: the shared program's slots hold aligned ones.
    with contextlib.nullcontext() if aligned else _plain_arrays(), \
            _own_program() if own or not aligned else contextlib.nullcontext():
        name_of_group = members.register_all(options=options)
    mode(name_of_group)
    prog_fd = bpfsys.obj_get(os.path.join(Layout().group_dir(name_of_group), group.PROG_PIN))
    stack.callback(os.close, prog_fd)
    shared_fd = None if own or not aligned else _shared_program(stack)
    return Variant(name, members, prog_fd, name_of_group, shared_fd)


def _shared_program(stack: contextlib.ExitStack) -> int:
    """The program this build's groups share (its folder is named by the
    build's digest: other builds' may be there too)."""
    from rpctl.controller.kernel import bpfsys, loader
    from rpctl.controller.store import shared_program
    from rpctl.controller.store.state import Layout

    digest = loader.shared_digest(shared_program.NAMES, loader.migration_wanted())
    folder = os.path.join(shared_program.base_dir(Layout().bpffs), shared_program.PREFIX + digest)
    fd = bpfsys.obj_get(os.path.join(folder, shared_program.PROG_PIN))
    stack.callback(os.close, fd)
    return fd


def _weighted(g: str) -> None:
    pass


def _drained(g: str) -> None:
    from rpctl.controller.store import group

    group.set_draining(f"w{MEMBERS - 1}", True, group=g)


def _cpu_pin(g: str) -> None:
    from rpctl.controller.ops import pin

    pin.pin_cpu({"w0": 0, "w1": 1}, group=g)


def _rss_pin(g: str) -> None:
    from rpctl.controller.kernel import rss
    from rpctl.controller.ops import pin

    from tests.support.rss_device import synthetic_device

    info = synthetic_device({"tcp4": rss.RXH_ADDRS | rss.RXH_PORTS}, queue_cpus=({0}, {1}, {0}, {1}))
    pin.pin_rss(info, {"w0": 0, "w1": 1}, group=g)


def _adaptive(throttled: bool, lease_s: float) -> Callable[[str], None]:
    """mode() of an adaptive group, its throttle written as rpctl serve writes
    it: THROTTLED throttled (or nobody), with a lease that runs `lease_s`
    seconds more (negative: over since then)."""

    def mode(g: str) -> None:
        import time

        from rpctl.controller.store import group
        from rpctl.controller.tables.adaptive import Reason

        with group.Group.open(g) as opened:
            group.set_adaptive(opened, True)
            who = {opened.find(opened.members(), THROTTLED): Reason(9, 0)} if throttled else {}
            group.put_throttle(opened, who, time.monotonic_ns() + int(lease_s * 1e9), time.monotonic_ns())

    return mode


HOUR = 3600.0


class KnownFlows:
    """UDP traffic of long-lived flows: FLOWS client sockets on fixed 4-tuples
    send in turn, so that, after a first datagram each, every datagram belongs
    to a flow the program has seen.  One set of clients serves every variant
    (the destination port makes the flows distinct)."""

    def __init__(self, stack: contextlib.ExitStack, count: int):
        from tests.support.traffic import Members, UdpFlows

        self.clients = UdpFlows(Members(proto="udp"), count, seed=11)
        stack.callback(self.clients.close)

    def __call__(self, variant: Variant, count: int, seed: int, batch: int = 200) -> int:
        import collections

        members = variant.members
        socks = self.clients.socks
        received: collections.Counter = collections.Counter()
        for start in range(0, count, batch):
            for i in range(start, min(count, start + batch)):
                socks[i % len(socks)].sendto(b"x", (members.host, members.port))
            members.drain_queues(received)
        return sum(received.values())

    def warm(self, variant: Variant) -> None:
        """One datagram from every flow: each is in the variant's flow table."""
        self(variant, len(self.clients.socks), 0)


class NewFlows:
    """Datagrams each from a fresh source, a new flow each, into a flow table
    emptied before every round: a round's flows find sets with room (a
    run's would fill the default table)."""

    def __init__(self, table):
        self.table = table  # kernel.maps.Map

    def __call__(self, variant: Variant, count: int, seed: int) -> int:
        from rpctl.controller.kernel import bpfsys

        self.table.clear(bpfsys.map_info(self.table.fd).max_entries)
        return _new_flows(variant, count, seed)


def _flow_table(variant: Variant, stack: contextlib.ExitStack):
    """The flow table of rpctl variant's group, opened."""
    from rpctl.controller.contract import abi
    from rpctl.controller.kernel.maps import Map
    from rpctl.controller.store.state import Layout

    table = Map.open_pinned(os.path.join(Layout().group_dir(variant.group), "flows"), abi.MAP_SPECS["flows"])
    stack.callback(table.close)
    return table


def _new_flows(variant: Variant, count: int, seed: int) -> int:
    """Every datagram from a fresh source: a new flow each, inserted into the table."""
    from tests.support.traffic import udp_datagrams

    return sum(udp_datagrams(variant.members, count, seed=seed).values())


def _tcp(variant: Variant, count: int, seed: int) -> int:
    from tests.support.traffic import tcp_connections

    counts, failures = tcp_connections(variant.members, count, seed=seed)
    if failures:
        raise RuntimeError(f"{variant.name}: {failures} connections failed")
    return sum(counts.values())


def _accept_forever(sock) -> None:
    sock.setblocking(True)
    while True:
        conn, _ = sock.accept()
        conn.close()


def _to_workers(variant: Variant, count: int, seed: int) -> int:
    """Connections to members whose own worker processes accept them."""
    from tests.support.traffic import tcp_connections

    _, failures = tcp_connections(variant.members, count, seed=seed, accept=False)
    if failures:
        raise RuntimeError(f"{variant.name}: {failures} connections failed")
    return count


def _with_workers(variant: Variant, stack: contextlib.ExitStack) -> Variant:
    """Each member socket of `variant` served by a worker process accepting
    in a loop, as a server's are: the program then runs beside busy
    processes that share its caches.  (Blocking mode is a property of the
    shared file description: only the workers accept on these sockets.)"""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_accept_forever, args=(s,), daemon=True) for s in variant.members.socks]
    for p in procs:
        p.start()
        stack.callback(p.join, 5)
        stack.callback(p.kill)
    variant.name = WORKED + variant.name
    variant.traffic = _to_workers
    return variant


def _flow_maps(stack: contextlib.ExitStack, kinds: tuple[str, ...] = ("by_hash", "by_tuple", "sets")) -> list[dict]:
    """The flow tables decision 0010 weighs, for rpctl's default of 65,536 flows:
    LRU hash maps keyed by md->hash ("by_hash") and by the 4-tuple ("by_tuple"),
    and 4-way sets in an array ("sets"); `kinds` of them, each {name: map}."""
    from rpctl.controller.contract import abi
    from rpctl.controller.kernel.maps import Map

    flows = abi.RP_FLOW_TABLE_DEFAULT
    specs = {
        "by_hash": abi.MapSpec("flows_by_hash", abi.MAP_TYPE_LRU_HASH, 4, 16, flows),
        "by_tuple": abi.MapSpec("flows_by_tuple", abi.MAP_TYPE_LRU_HASH, 12, 16, flows),
        "sets": abi.MapSpec("flow_sets", abi.MAP_TYPE_ARRAY, 4, 64, flows // 4),
    }
    out = []
    for kind in kinds:
        m = Map.create(specs[kind])
        stack.callback(m.close)
        out.append({m.spec.name: m})
    return out


def _instances(n: int, name: str, make: Callable[[str], Variant]) -> list[Variant]:
    """`n` groups of one variant, `make(name)` each: NAME, NAME #2, ...;
    run() merges their rounds into one row."""
    return [make(name if k == 0 else f"{name}{INSTANCE}{k + 1}") for k in range(n)]


def _rpctl_groups(ports, stack: contextlib.ExitStack, mode: Callable[[str], object] = _weighted,
                  **kw) -> Callable[[str], Variant]:
    """make(name) for _instances: rpctl's program on a new group at the next
    port (equal weights; _rpctl's keywords), then mode(group)."""
    return lambda name: _rpctl(name, next(ports), stack, mode, **kw)


def _and_own(n: int, name: str, ports, stack: contextlib.ExitStack, mode: Callable[[str], object] = _weighted,
             **kw) -> list[Variant]:
    """`n` groups of a variant on the shared program, and `n` on programs of
    their own ("NAME, own program"): what sharing costs on its path."""
    return [*_instances(n, name, _rpctl_groups(ports, stack, mode, **kw)),
            *_instances(n, name + OWN, _rpctl_groups(ports, stack, mode, own=True, **kw))]


def _select_only_groups(ports, stack: contextlib.ExitStack, proto: str = "tcp") -> Callable[[str], Variant]:
    """make(name) for _instances: the select-only floor on a new group at the next port."""
    return lambda name: _reference(name, "rp_select_only", next(ports), stack, proto=proto)


def _fill(variant: Variant) -> Variant:
    """New flows until every set of the variant's flow table is full."""
    _new_flows(variant, FILL, seed=FILL)
    return variant


def _udp_variants(ports, stack: contextlib.ExitStack, known: KnownFlows, n: int) -> list[Variant]:
    """UDP groups: the floor, the flow tables' references, and rpctl with and
    without flow affinity, its flows known, in cache, or new."""
    from rpctl.controller.store.options import GroupOptions

    by_hash, by_tuple, in_sets = _flow_maps(stack)
    variants = [
        *_instances(n, "udp select only", _select_only_groups(ports, stack, proto="udp")),
        _reference("udp flow by hash", "rp_flow_by_hash", next(ports), stack, by_hash, proto="udp"),
        _reference("udp flow by 4-tuple", "rp_flow_by_tuple", next(ports), stack, by_tuple, proto="udp"),
        _reference("udp flow in 4-way sets", "rp_flow_in_sets", next(ports), stack, in_sets, proto="udp"),
        *_instances(n, "udp rpctl, no flows",
                    _rpctl_groups(ports, stack, proto="udp", options=GroupOptions(flow_affinity=False))),
        *_instances(n, DATAGRAM_BALANCE,
                    _rpctl_groups(ports, stack, proto="udp", options=GroupOptions(balance="datagram"))),
        *_and_own(n, "udp rpctl, known flow", ports, stack, proto="udp"),
        *_instances(n, "udp rpctl, known flow" + UNALIGNED, _rpctl_groups(ports, stack, proto="udp", aligned=False)),
    ]
    # The same with FEW_FLOWS flows taking turns: their entries stay in cache.
    few = KnownFlows(stack, FEW_FLOWS)
    by_hash, in_sets = _flow_maps(stack, ("by_hash", "sets"))
    warm = [
        _reference(f"udp flow by hash, {FEW_FLOWS} flows", "rp_flow_by_hash", next(ports), stack, by_hash,
                   proto="udp"),
        _reference(f"udp flow in 4-way sets, {FEW_FLOWS} flows", "rp_flow_in_sets", next(ports), stack, in_sets,
                   proto="udp"),
        *_instances(n, f"udp rpctl, known flow, {FEW_FLOWS} flows", _rpctl_groups(ports, stack, proto="udp")),
    ]
    for v in variants:
        v.traffic = known
        known.warm(v)
    for v in warm:
        v.traffic = few
        few.warm(v)
    (in_sets,) = _flow_maps(stack, ("sets",))
    new = [_reference("udp flow in 4-way sets, new flows", "rp_flow_in_sets", next(ports), stack, in_sets,
                      proto="udp")]
    new[0].traffic = NewFlows(*in_sets.values())
    for v in _and_own(n, "udp rpctl, new flows", ports, stack, proto="udp"):
        v.traffic = NewFlows(_flow_table(v, stack))
        new.append(v)
    for v in _and_own(1, "udp rpctl, new flows, full sets", ports, stack, proto="udp",
                      options=GroupOptions(flow_table_size=FULL_TABLE)):
        v.traffic = _new_flows
        new.append(_fill(v))
    return variants + warm + new


def _setup(stack: contextlib.ExitStack, known: KnownFlows, n: int) -> list[Variant]:
    """Every variant; those the goals compare on `n` groups each."""
    ports = iter(range(BASE_PORT, BASE_PORT + 100))
    select_only = _select_only_groups(ports, stack)

    def worked(make: Callable[[str], Variant]) -> Callable[[str], Variant]:
        return lambda name: _with_workers(make(name), stack)

    weighted = _and_own(n, "rpctl weighted", ports, stack)
    ladder = _ladder_maps(weighted[0].group, stack)
    return [
        _reference("return only", "rp_return_only", next(ports), stack),
        *_instances(n, "select only", select_only),
        _reference("select only, 256", "rp_select_only_256", next(ports), stack, count=256),
        _reference("+ lookups", "rp_lookups", next(ports), stack, ladder),
        _reference("+ slot", "rp_slot", next(ports), stack, ladder),
        _reference("+ counter", "rp_counted", next(ports), stack, ladder),
        _reference("wide slots", "rp_wide_slots", next(ports), stack, ladder),
        *weighted,
        _rpctl("rpctl drained", next(ports), stack, _drained),
        *_and_own(n, "rpctl cpu pin", ports, stack, _cpu_pin),
        *_and_own(1, "rpctl rss pin", ports, stack, _rss_pin),
        *_instances(n, "rpctl adaptive, none throttled", _rpctl_groups(ports, stack, _adaptive(False, HOUR))),
        *_and_own(n, f"rpctl adaptive, {THROTTLED} throttled", ports, stack, _adaptive(True, HOUR)),
        *_and_own(1, "rpctl adaptive, lease over", ports, stack, _adaptive(True, -1.0)),
        _rpctl("rpctl weighted, 64", next(ports), stack, _weighted, count=64),
        _rpctl("rpctl weighted, 256", next(ports), stack, _weighted, count=256),
        *_instances(n, "select only", worked(select_only)),
        *_instances(n, "rpctl weighted", worked(_rpctl_groups(ports, stack))),
        *_instances(n, "rpctl weighted" + UNALIGNED, _rpctl_groups(ports, stack, aligned=False)),
        *_udp_variants(ports, stack, known, n),
    ]


def _measure(variant: Variant, connections: int, seed: int) -> dict:
    t0, c0 = variant.run_stats()
    took = (variant.traffic or _tcp)(variant, connections, seed)
    t1, c1 = variant.run_stats()
    if took != connections:
        raise RuntimeError(f"{variant.name}: {took} of {connections} connections or datagrams arrived")
    runs = c1 - c0
    return {"ns": (t1 - t0) / runs if runs else float("nan"), "runs": runs}


def _paths(variant: Variant) -> str:
    """Which path of the program served the variant's connections, from its counters."""
    from rpctl.controller.read import views

    if not variant.group:
        return "-"
    view = views.read_view(variant.group)
    pinned = sum(m.pinned for m in view.members)
    selected = sum(m.selected for m in view.members)
    fallback = sum(m.fallback for m in view.members)
    followed = sum(m.flow_datagrams for m in view.members)
    drained = [m.name for m in view.members if m.draining and m.selected + m.pinned + m.fallback]
    misses = view.pin_fallbacks + view.pin_unassigned + view.rss_unhashed + view.slot_misses + view.no_live_member
    parts = [f"{what} {n:,}" for what, n in (("flow table", followed), ("table", selected), ("pinned", pinned),
                                              ("fallback", fallback), ("misses", misses),
                                              ("evictions", view.flow_evictions)) if n]
    if drained:
        parts.append(f"DRAINED MEMBER SELECTED: {drained}")
    return ", ".join(parts) or "-"


def run(quick: bool) -> None:
    from rpctl.controller.kernel import bpfsys

    from tests.support.netns import fresh_netns

    rounds = QUICK_ROUNDS if quick else ROUNDS
    connections = QUICK_CONNECTIONS if quick else CONNECTIONS
    with fresh_netns("rpctl-bench-dp-"), contextlib.ExitStack() as stack:
        known = KnownFlows(stack, QUICK_FLOWS if quick else FLOWS)
        variants = _setup(stack, known, QUICK_INSTANCES if quick else INSTANCES)
        stats_fd = bpfsys.enable_stats()
        stack.callback(os.close, stats_fd)
        seeds = iter(range(1, 10_000))

        def measure(v: Variant) -> Callable[[], dict]:
            # The same sources for every variant of a round.
            return lambda: _measure(v, connections, seed=next(seeds) // len(variants))

        by_group = alternate(rounds, {v.name: measure(v) for v in variants})
        paths = {v.name: _paths(v) for v in variants}
        sizes = {v.name: v.size() for v in variants}
        # What the verifier walks: a group's program for each group, the
        # shared one once a boot, a group's own program for each group.
        named = {v.name: v for v in variants}
        programs = {what: bpfsys.prog_info(fd) for what, fd in (
            ("group", named["rpctl weighted"].prog_fd), ("shared", named["rpctl weighted"].shared_fd),
            ("own", named["rpctl weighted" + OWN].prog_fd))}
    for name, rs in by_group.items():
        print(f"{name:>22}: " + " ".join(f"{r['ns']:.0f}" for r in rs) + f"  ({paths[name]})", flush=True)

    # One row per variant: the rounds of all its groups; the path and size
    # of its first group (the others run the same program on the same load).
    results: dict[str, list[dict]] = {}
    group_medians: dict[str, list[float]] = {}
    for name, rs in by_group.items():
        variant = name.split(INSTANCE)[0]
        results.setdefault(variant, []).extend(rs)
        group_medians.setdefault(variant, []).append(median(r["ns"] for r in rs))
    f = Figures({name: median(r["ns"] for r in rs) for name, rs in results.items()},
                {what: (info.xlated_prog_len // 8, info.verified_insns) for what, info in programs.items()},
                len(group_medians["select only"]), rounds, connections, len(known.clients.socks))
    rows = []
    for name, rs in results.items():
        rows.append([
            name,
            f"{f.ns[name]:.0f}",
            span(r["ns"] for r in rs),
            # UDP rows against the floor on UDP sockets, measured alongside.
            f"{f.over(name):+d}",
            f"{round(f.ns[name] - f.ns['return only']):+d}",
            # What sharing costs on the row's path: against the same row on programs of the groups' own.
            f"{f.shared(name):+d}" if name + OWN in f.ns else "",
            sizes[name],
            paths[name],
            " / ".join(f"{m:.0f}" for m in group_medians[name]) if len(group_medians[name]) > 1 else "-",
        ])

    def kind(name: str) -> str:
        name = name.removeprefix("udp ").removeprefix(WORKED)
        if name.startswith("rpctl"):
            own = name.endswith((OWN, UNALIGNED))  # the unaligned rows are groups' own programs too
            return "rpctl's program, own (comparison)" if own else "rpctl's program"
        if name.startswith("flow "):
            return "UDP flow table keys"
        return "floor" if name.startswith(("return", "select")) else "ladder to rpctl weighted"

    figure = plots.bars(
        "datapath", "Cost per selection (bpf_stats run_time_ns / run_cnt; whiskers: range over rounds)",
        "ns per program run",
        [plots.Bar(n, f.ns[n], min(r["ns"] for r in rs), max(r["ns"] for r in rs), kind(n))
         for n, rs in results.items()],
        {"select-only floor": f.ns["select only"], "return-only floor": f.ns["return only"]},
    )
    write_section(SECTION, _head(f) + table(
        ["program", "ns per run", "range over rounds", "vs select only", "vs return only", "vs own program",
         "insns (xlated) / JIT bytes: group + shared", "path", "median of each group"], rows
    ) + f"\n\n{figure}\n\n" + _write_up(f))


@dataclass
class Figures:
    """What the write-up reads: each row's median, and the programs' sizes."""

    ns: dict[str, float]
    # "group", "shared", "own": (instructions, instructions the verifier processed)
    programs: dict[str, tuple[int, int]]
    groups: int               # groups per compared row
    rounds: int
    connections: int
    flows: int                # the known-flow rows' flows

    def over(self, name: str) -> int:
        """ns over the row's floor: the select-only program on sockets of its protocol."""
        return round(self.ns[name] - self.ns["udp select only" if name.startswith("udp") else "select only"])

    def step(self, a: str, b: str) -> int:
        return round(self.ns[b] - self.ns[a])

    def shared(self, name: str) -> int:
        """What the shared program costs on the row's path: against the row on programs of the groups' own."""
        return self.step(name + OWN, name)


def _head(f: Figures) -> str:
    return f"""### Data path: cost per selection (issues 7 and 23)

```sh
./scripts/bench.sh datapath
```

bpf_stats (BPF_ENABLE_STATS) run_time_ns / run_cnt of each program, one
group of {MEMBERS} TCP listeners per program, all loaded side by side in one
network namespace; each round opens {f.connections} connections (one SYN, so one
run, each) to every group in turn, from the same varied 127/8 sources, the
order rotating; {f.rounds} rounds, medians.  The rows the goals compare are
measured on {f.groups} groups each, their rounds merged (last column: each
group's median): the same program on two groups of one run, where the kernel
put their maps, sockets and code apart, differed by up to 140 ns in a
test run, so one group would be one sample of that placement.  The reference programs
(bench/datapath.bpf.c) go through rpctl's own loader onto the same kind of
group: "return only" is the kernel's entry into a program plus the two
clock reads of bpf_stats; "select only" adds one bpf_sk_select_reuseport at
hash & 3, the least a program that picks a socket does.  The ladder rows
build rpctl's weighted path up one piece at a time on the live tables of the
"rpctl weighted" group.  Path: what the program's own counters say served
the connections.

rpctl's rows run on groups as rpctl makes them (docs/decisions/0017): a
group's program holds the short cut, the common cases in straight lines with
the group's maps as constants of its code, and hands the rest by a tail call
to the one program every group shares, which finds the group's maps through
arrays of maps by the group's slot.  A tail call stays in one run, so a
group's figure includes the shared program's part; the sizes column gives
the group's program + the shared one.  The rows "..., own program" make the
same selections, in the same rounds, on groups whose program holds every step
(RPCTL_OWN_PROGRAM=1, as before the shared program): "vs own program" is what
sharing costs on that row's path.

"""


def _write_up(f: Figures) -> str:
    """The section's text after the table: the goals, then what each nanosecond buys."""
    few, throttled = f"udp rpctl, known flow, {FEW_FLOWS} flows", f"rpctl adaptive, {THROTTLED} throttled"
    short = ("rpctl weighted", "rpctl cpu pin", "udp rpctl, known flow", "udp rpctl, new flows",
             "udp rpctl, new flows, full sets")
    return f"""UDP rows ("udp ..."): groups of {MEMBERS} UDP sockets, in the same rounds; each round
sends {f.connections} datagrams to each, and "vs select only" is against the
select-only floor on UDP sockets ("udp select only", {f.ns["udp select only"]:.0f} ns).  The
datagrams of the known-flow rows come from {f.flows:,} client sockets on fixed
4-tuples, each of which sent one datagram before the first round: every
datagram is one of a flow already in the table (path: "flow table").

**The goals, on the rows measured on {f.groups} group{"s" if f.groups > 1 else ""}:**
- TCP weighted within 25 ns of the select-only floor:
  **{f.over("rpctl weighted"):+d} ns** ({f.ns["rpctl weighted"]:.0f} against {f.ns["select only"]:.0f} ns; own program
  {f.over("rpctl weighted" + OWN):+d}); on listeners whose worker processes accept in a loop
  {f.step(WORKED + "select only", WORKED + "rpctl weighted"):+d} over their own floor.
- A known UDP flow within 40 ns of a bare one-line set lookup of the same
  size: **{f.step("udp flow in 4-way sets", "udp rpctl, known flow"):+d} ns** ({f.over("udp rpctl, known flow"):+d} over the floor, the
  reference {f.over("udp flow in 4-way sets"):+d}, {f.flows:,} flows taking turns); within 60 ns of the
  floor with its flows in cache: **{f.over(few):+d} ns** ({FEW_FLOWS} flows).
- Sharing one program costs a selection at most 5 ns: "vs own program" is
  {", ".join(f"{f.shared(n):+d} ({n.removeprefix('rpctl ').removeprefix('udp rpctl, ')})" for n in short)}
  on the paths the short cut takes; {f.shared(throttled):+d} with {THROTTLED} throttled,
  {f.shared("rpctl adaptive, lease over"):+d} with its lease over and {f.shared("rpctl rss pin"):+d} for RSS pins,
  whose selections go on, some or all, to the shared program (below).

**Where a weighted connection's nanoseconds go**, from the ladder:
- the select itself ({f.step("return only", "select only"):+d} over return only): the helper
  call, the socket array lookup and its checks; every steering program pays it;
- ctl and generation lookups ({f.step("select only", "+ lookups"):+d}): two array lookups the
  verifier inlines into loads; they buy the atomic flip of a weight change
  (one write of ctl.gen makes a whole new table live);
- the slot ({f.step("+ lookups", "+ slot"):+d}): one byte of the generation element already looked
  up, in a 1 KiB table that stays in cache: this buys weights, drains and
  minimal-disruption changes;
- the member's counter ({f.step("+ slot", "+ counter"):+d}): an inlined per-CPU lookup and an add;
  it buys the selected and observed shares of status, the dashboard and the
  metrics;
- the rest of the group's program ({f.step("+ counter", "rpctl weighted"):+d}): the tests of ctl's
  flags, the mode, a migrating request and the live count that send the
  connection past the other cases, in the straight line the short cut is
  (run in the steps' order, the same connection jumped over the code of
  every other step: +80 ns, decision 0010).  Each step above buys something
  the goal's users asked for; what is left to cut is below what one run can
  tell apart (compare the spread of one row's groups, last column).

**A known flow.**  rpctl's flow table is an array of 8-way sets of two
cache lines (docs/decisions/0010): one lookup, no hash map.  References: an
LRU hash map keyed by the kernel's hash of the 4-tuple costs
{f.over("udp flow by hash"):+d} ns over the floor, keyed by the 4-tuple itself {f.over("udp flow by 4-tuple"):+d} ns (a
helper call to read the addresses and a 12-byte key to hash), an array of
4-way sets of one cache line each {f.over("udp flow in 4-way sets"):+d} ns: with {f.flows:,} flows taking
turns, a flow's entry is rarely in cache when its next datagram comes, and
what a lookup costs is the lines it misses (a hash map's bucket and element,
a set's line).  With {FEW_FLOWS} flows taking turns (their entries stay in cache)
rpctl costs {f.over(few):+d} ns, the hash map's lookup {f.over(f"udp flow by hash, {FEW_FLOWS} flows"):+d} and the 4-way sets'
{f.over(f"udp flow in 4-way sets, {FEW_FLOWS} flows"):+d}: the hash map's own work (a call, hashing the key again, the
bucket walk, the LRU's reference bit) is what the sets leave out.  What
rpctl adds to the bare set lookup is the lines a weighted selection reads
too (ctl, the generation's header and the flow's member's incarnation, the
per-CPU counter: without flow affinity {f.over("udp rpctl, no flows"):+d} ns).  The set's lookup is
inlined: a table of the default size is made without BPF_F_INNER_MAP (the
flag that lets one array of maps hold tables of any size, and makes every
lookup a call: about 15 ns a datagram, decision 0017); a table of another
size pays that call.  Flows are stamped with the kernel's jiffies, one
load; a clock helper call there cost about 35 ns a datagram (decision
0010).

**A new flow** ("udp rpctl, new flows": each datagram from a new source,
into a table of the default size emptied before each round, so that a
round's {f.connections} flows find room): {f.over("udp rpctl, new flows"):+d} ns over the floor, against
{f.over("udp flow in 4-way sets, new flows"):+d} for the bare reference ("udp flow in 4-way sets, new flows": a lookup
that misses and an insert, in 4-way sets of the same 1 MiB, emptied
likewise).  Both miss the set's line, as a known flow of {f.flows:,} does;
rpctl's own part ({f.step("udp flow in 4-way sets, new flows", "udp rpctl, new flows"):+d}) is the lines a weighted selection reads, the
set's ways compared up to its first empty one, the counters (the selection
and flows_created) and the flow written into that way.  The group's program places and remembers
every new flow itself ({f.shared("udp rpctl, new flows"):+d} against a group's own program): the
eviction order of a full set is computed in arithmetic, one path for the
verifier, so it fits the program verified for each group; it used to hand
every new flow to the shared program, which looked the flow's set up again
through the group's slot.  "..., full sets" (a table of {FULL_TABLE} flows, every
set full before the first round) evicts a flow with each datagram:
{f.over("udp rpctl, new flows, full sets"):+d} ns (own program {f.over("udp rpctl, new flows, full sets" + OWN):+d}); its sets stay in cache, so it
is the victim choice's instructions (and, a table of another size than
the default, a call for the set's lookup) more than a line's miss.

**Datagram balance** ("{DATAGRAM_BALANCE}": a group without flow affinity
made with `balance = "datagram"`, each datagram placed at a random draw
rather than at the kernel's hash): {f.over(DATAGRAM_BALANCE):+d} ns over the floor, against
{f.over("udp rpctl, no flows"):+d} for the same group placing by the hash
({f.step("udp rpctl, no flows", DATAGRAM_BALANCE):+d}): the draw (a helper call), this CPU's handoff element
where the draw waits for the shared program (a lookup and a store), and the
short cut's first choice with its exit instead of the plain weighted lines.
Groups that place by the hash test one flag more, on the paths past the
plain weighted one only (docs/decisions/0022).

**Adaptive groups** (rpctl serve throttles a member whose queue builds;
here the throttle is written as serve writes it): with nobody throttled
{f.over("rpctl adaptive, none throttled"):+d} ns ({f.step("rpctl weighted", "rpctl adaptive, none throttled"):+d} over a weighted group: the throttle's lookup and the
slot member's bit, on the short cut).  With {THROTTLED} throttled and its lease
running, the quarter of connections whose slot names {THROTTLED} goes on to the
shared program, which reads the lease (a helper call) and re-hashes them
over the other members: {f.over(throttled):+d} ns on average, own program
{f.over(throttled + OWN):+d}.  With the lease over (a serve that stopped), that quarter
reads the lease and goes back to its slot member: {f.over("rpctl adaptive, lease over"):+d} ns (own {f.over("rpctl adaptive, lease over" + OWN):+d}).

**What the shared program costs where it runs**: a selection the short cut
hands on pays the handoff (this CPU's element: slot and flow state
written, read back), the tail call, and a look-up of the group's maps in
each array of maps it reads (ctl, generation, sockets, counters; group
counters, throttle, flow table where a step needs them).  Measured side by
side with the short cut switched off, every selection handed on: about
10 ns a selection over the same steps in a group's own program (decision
0017).  So the rows whose selections all stay on the short cut (weighted,
drained, CPU pin, known and new flows) cost what a group's own program
costs, and those that hand some on pay about 10 ns for each: RSS pins
({f.over("rpctl rss pin"):+d} ns), the throttled member's quarter, QUIC, a closed member's
re-hashes, migration.

**Sizes.**  A group's program is {f.programs["group"][0]:,} instructions, processed by the verifier
in {f.programs["group"][1]:,} steps for each group made; the shared program {f.programs["shared"][0]:,}
instructions, {f.programs["shared"][1]:,} steps once a boot; a group's own program (every step,
the comparison) {f.programs["own"][0]:,} instructions, {f.programs["own"][1]:,} steps for each group.
Nearly all of the shared program is the unrolled re-hashes and fallback
walk, the RSS hash and QUIC; a weighted selection runs a few dozen
instructions.

Where a map's values start: rpctl makes its array maps mappable
(BPF_F_MMAPABLE) for the layout alone.  The kernel then starts their values
on a page; a plain array's start 56 bytes into a cache line, where the
64-byte ctl straddles two lines and a flow set's first way is split over
two.  The same program on plain arrays (rows "..., unaligned": groups' own
programs, as the shared program's slots are made aligned) cost
{f.step("rpctl weighted" + OWN, "rpctl weighted" + UNALIGNED):+d} ns a connection and
{f.step("udp rpctl, known flow" + OWN, "udp rpctl, known flow" + UNALIGNED):+d} ns a datagram of a known flow against the rows "..., own
program": compare with the spread between the groups of one row (last
column) before reading a difference into it.

The table's size is what matters most: the same program with the table
rpctl had before (65,536 u32 slots per generation in a map of their own,
256 KiB, "wide slots") costs {f.step("+ counter", "wide slots")} ns more: a cache (and TLB) miss
on nearly every new connection, because consecutive connections hash to
unrelated slots (docs/decisions/0005).  Drained members change nothing on
the path (the table simply does not name them).  CPU pinning costs what
weighted does: the pin table is read instead of the slot table.  RSS
pinning ({f.over("rpctl rss pin"):+d} ns over the floor) recomputes the NIC's Toeplitz hash: a
helper call to read the addresses (they lie before the transport header,
out of the program's direct reach; the ports are read in place), twelve
loads from the per-byte hash table (12 KiB for IPv4) and a division by the
indirection table's size, the price of following the NIC's queues without
a NIC hash in the packet's metadata.  In earlier runs of this benchmark,
reading the ports through a second helper call cost about 18 ns more, and
a per-nibble table (24 loads from 1.5 KiB instead of 12 from 12 KiB) about
17 ns more: the byte table is not what misses.

Group size: over 256 sockets the select-only floor itself costs
{f.step("select only", "select only, 256"):+d} ns more than over 4: each selection touches another socket (its
array entry and the socket's own fields), which is rarely in cache.
rpctl's weighted selection at 256 members stays {f.step("select only, 256", "rpctl weighted, 256"):+d} ns over that
floor (at 4 members {f.step("select only", "rpctl weighted"):+d} over the 4-socket one; at 64 members it
costs {f.step("rpctl weighted", "rpctl weighted, 64"):+d} against 4): its own table is 1 KiB at any size.

Not measured here: the kernel's default selection runs no program, so
bpf_stats cannot see it; the end-to-end benchmark compares against it."""
