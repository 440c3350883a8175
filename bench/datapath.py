"""Data path: the kernel's own account (bpf_stats) of what one selection costs.

Same kind of group for every variant: four TCP listeners on one port (a
port per variant), all in one fresh network namespace, all loaded and
attached before the first round.  With bpf_stats on (BPF_ENABLE_STATS, held
for the run), the kernel adds the time of every run of a program to its
run_time_ns and counts it in run_cnt; each round opens the same CONNECTIONS
connections (one SYN, so one run, each; varied 127/8 sources) to every
variant in turn, rotating the order, and takes the difference of
run_time_ns / run_cnt over the round.  The variants the goals compare (the
floors; rpctl weighted, with and without workers; rpctl's UDP rows) run on
INSTANCES groups each, merged into one row: the same program
on two groups of one run can differ by over 100 ns.

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
  rpctl weighted, 64 / 256   rpctl's program on groups of 64 and 256 members
  workers: select only / rpctl weighted   the same on listeners that
                    worker processes accept from in a loop
  udp select only       floor on four UDP sockets
  udp flow by hash      reference: an LRU hash map keyed by md->hash
  udp flow by 4-tuple   reference: an LRU hash map keyed by the 4-tuple read from the packet
  udp flow in 4-way sets  reference: one-cache-line sets in an array (rpctl's are 8-way)
  udp rpctl, no flows   rpctl's program on a UDP group without flow affinity
  udp rpctl, known flow rpctl's program, datagrams of flows already in its table
  udp rpctl, new flows  rpctl's program, every datagram a new flow
  ..., 16 flows         the flow tables and rpctl with 16 flows taking turns (in cache)
  ..., unaligned        rpctl's program on array maps made as before rpctl
                        made them mappable: values 56 bytes into a cache line
                        (a group's own program: see below)
  ..., own program      rpctl's program with every step in the group's own
                        program, as before the shared program (decision 0017):
                        what handing the steps to one shared program costs
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
WORKED = "workers: "   # the name of a variant whose listeners worker processes accept from
UNALIGNED = ", unaligned"
OWN = ", own program"  # rpctl's program as a group's own, not shared (decision 0017)  # rpctl on array maps whose values start mid-line (_plain_arrays)


@dataclass
class Variant:
    name: str
    members: object                 # traffic.Members
    prog_fd: int
    group: Optional[str] = None     # rpctl variants: the group, to read its counters back
    # traffic(variant, count, seed) -> how many connections or datagrams the
    # members took: one program run each.
    traffic: Optional[Callable[[Variant, int, int], int]] = None

    def run_stats(self) -> tuple[int, int]:
        from rpctl.controller.kernel import bpfsys

        info = bpfsys.prog_info(self.prog_fd)
        return info.run_time_ns, info.run_cnt


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
    return Variant(name, members, prog_fd, name_of_group)


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


def _flow_maps(stack: contextlib.ExitStack) -> list[dict]:
    """The flow tables decision 0010 weighs, for rpctl's default of 65,536 flows:
    LRU hash maps keyed by md->hash and by the 4-tuple, and 4-way sets in an array."""
    from rpctl.controller.contract import abi
    from rpctl.controller.kernel.maps import Map

    flows = abi.RP_FLOW_TABLE_DEFAULT
    specs = (
        abi.MapSpec("flows_by_hash", abi.MAP_TYPE_LRU_HASH, 4, 16, flows),
        abi.MapSpec("flows_by_tuple", abi.MAP_TYPE_LRU_HASH, 12, 16, flows),
        abi.MapSpec("flow_sets", abi.MAP_TYPE_ARRAY, 4, 64, flows // 4),
    )
    out = []
    for spec in specs:
        m = Map.create(spec)
        stack.callback(m.close)
        out.append({spec.name: m})
    return out


def _instances(n: int, name: str, make: Callable[[str], Variant]) -> list[Variant]:
    """`n` groups of one variant, `make(name)` each: NAME, NAME #2, ...;
    run() merges their rounds into one row."""
    return [make(name if k == 0 else f"{name}{INSTANCE}{k + 1}") for k in range(n)]


def _weighted_groups(ports, stack: contextlib.ExitStack, proto: str = "tcp", options=None,
                     aligned: bool = True, own: bool = False) -> Callable[[str], Variant]:
    """make(name) for _instances: rpctl's program, equal weights, on a new group at the next port."""
    return lambda name: _rpctl(name, next(ports), stack, _weighted, proto=proto, options=options, aligned=aligned,
                               own=own)


def _select_only_groups(ports, stack: contextlib.ExitStack, proto: str = "tcp") -> Callable[[str], Variant]:
    """make(name) for _instances: the select-only floor on a new group at the next port."""
    return lambda name: _reference(name, "rp_select_only", next(ports), stack, proto=proto)


def _udp_variants(ports, stack: contextlib.ExitStack, known: KnownFlows, n: int) -> list[Variant]:
    """UDP groups: the floor, the two flow keys, and rpctl with and without flow affinity."""
    from rpctl.controller.store.options import GroupOptions

    def udp_rpctl(**kw) -> Callable[[str], Variant]:
        return _weighted_groups(ports, stack, proto="udp", **kw)

    by_hash, by_tuple, in_sets = _flow_maps(stack)
    variants = [
        *_instances(n, "udp select only", _select_only_groups(ports, stack, proto="udp")),
        _reference("udp flow by hash", "rp_flow_by_hash", next(ports), stack, by_hash, proto="udp"),
        _reference("udp flow by 4-tuple", "rp_flow_by_tuple", next(ports), stack, by_tuple, proto="udp"),
        _reference("udp flow in 4-way sets", "rp_flow_in_sets", next(ports), stack, in_sets, proto="udp"),
        *_instances(n, "udp rpctl, no flows", udp_rpctl(options=GroupOptions(flow_affinity=False))),
        *_instances(n, "udp rpctl, known flow", udp_rpctl()),
        *_instances(n, "udp rpctl, known flow" + UNALIGNED, udp_rpctl(aligned=False)),
        *_instances(n, "udp rpctl, known flow" + OWN, udp_rpctl(own=True)),
    ]
    # The same with FEW_FLOWS flows taking turns: their entries stay in cache.
    few = KnownFlows(stack, FEW_FLOWS)
    by_hash, _, in_sets = _flow_maps(stack)
    warm = [
        _reference(f"udp flow by hash, {FEW_FLOWS} flows", "rp_flow_by_hash", next(ports), stack, by_hash,
                   proto="udp"),
        _reference(f"udp flow in 4-way sets, {FEW_FLOWS} flows", "rp_flow_in_sets", next(ports), stack, in_sets,
                   proto="udp"),
        *_instances(n, f"udp rpctl, known flow, {FEW_FLOWS} flows", udp_rpctl()),
    ]
    for v in variants:
        v.traffic = known
        known.warm(v)
    for v in warm:
        v.traffic = few
        few.warm(v)
    new = _instances(n, "udp rpctl, new flows", udp_rpctl())
    for v in new:
        v.traffic = _new_flows
    return variants + warm + new


def _setup(stack: contextlib.ExitStack, known: KnownFlows, n: int) -> list[Variant]:
    """Every variant; those the goals compare on `n` groups each."""
    ports = iter(range(BASE_PORT, BASE_PORT + 100))
    tcp_rpctl, select_only = _weighted_groups(ports, stack), _select_only_groups(ports, stack)
    plain = _weighted_groups(ports, stack, aligned=False)

    def worked(make: Callable[[str], Variant]) -> Callable[[str], Variant]:
        return lambda name: _with_workers(make(name), stack)

    own = _weighted_groups(ports, stack, own=True)
    weighted, *more_weighted = _instances(n, "rpctl weighted", tcp_rpctl)
    shared = _ladder_maps(weighted.group, stack)
    return [
        _reference("return only", "rp_return_only", next(ports), stack),
        *_instances(n, "select only", select_only),
        _reference("select only, 256", "rp_select_only_256", next(ports), stack, count=256),
        _reference("+ lookups", "rp_lookups", next(ports), stack, shared),
        _reference("+ slot", "rp_slot", next(ports), stack, shared),
        _reference("+ counter", "rp_counted", next(ports), stack, shared),
        _reference("wide slots", "rp_wide_slots", next(ports), stack, shared),
        weighted,
        *more_weighted,
        *_instances(n, "rpctl weighted" + OWN, own),
        _rpctl("rpctl drained", next(ports), stack, _drained),
        _rpctl("rpctl cpu pin", next(ports), stack, _cpu_pin),
        _rpctl("rpctl rss pin", next(ports), stack, _rss_pin),
        _rpctl("rpctl weighted, 64", next(ports), stack, _weighted, count=64),
        _rpctl("rpctl weighted, 256", next(ports), stack, _weighted, count=256),
        *_instances(n, "select only", worked(select_only)),
        *_instances(n, "rpctl weighted", worked(tcp_rpctl)),
        *_instances(n, "rpctl weighted" + UNALIGNED, plain),
        *_instances(n, "rpctl weighted" + UNALIGNED, worked(plain)),
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
                                              ("fallback", fallback), ("misses", misses)) if n]
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
        sizes = {v.name: bpfsys.prog_info(v.prog_fd) for v in variants}
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
    ns = {name: median(r["ns"] for r in rs) for name, rs in results.items()}
    n_groups = len(group_medians["select only"])
    floor_ret, floor_sel = ns["return only"], ns["select only"]
    floor_udp = ns["udp select only"]
    rows = []
    for name, rs in results.items():
        info = sizes[name]
        rows.append([
            name,
            f"{ns[name]:.0f}",
            span(r["ns"] for r in rs),
            # UDP rows against the floor on UDP sockets, measured alongside.
            f"{round(ns[name] - (floor_udp if name.startswith('udp') else floor_sel)):+d}",
            f"{round(ns[name] - floor_ret):+d}",
            f"{info.xlated_prog_len // 8} / {info.jited_prog_len}",
            paths[name],
            " / ".join(f"{m:.0f}" for m in group_medians[name]) if len(group_medians[name]) > 1 else "-",
        ])

    def kind(name: str) -> str:
        name = name.removeprefix("udp ").removeprefix(WORKED)
        if name.startswith("rpctl"):
            return "rpctl's program"
        if name.startswith("flow "):
            return "UDP flow table keys"
        return "floor" if name.startswith(("return", "select")) else "ladder to rpctl weighted"

    figure = plots.bars(
        "datapath", "Cost per selection (bpf_stats run_time_ns / run_cnt; whiskers: range over rounds)",
        "ns per program run",
        [plots.Bar(n, ns[n], min(r["ns"] for r in rs), max(r["ns"] for r in rs), kind(n)) for n, rs in results.items()],
        {"select-only floor": floor_sel, "return-only floor": floor_ret},
    )

    def step(a: str, b: str) -> str:
        return f"{round(ns[b] - ns[a]):+d} ns"

    body = f"""### Data path: cost per selection (issue 7, part 1)

```sh
./scripts/bench.sh datapath
```

bpf_stats (BPF_ENABLE_STATS) run_time_ns / run_cnt of each program, one
group of {MEMBERS} TCP listeners per program, all loaded side by side in one
network namespace; each round opens {connections} connections (one SYN, so one
run, each) to every group in turn, from the same varied 127/8 sources, the
order rotating; {rounds} rounds, medians.  The rows the goals compare are
measured on {n_groups} groups each, their rounds merged (last column: each
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

""" + table(
        ["program", "ns per run", "range over rounds", "vs select only", "vs return only",
         "insns (xlated) / JIT bytes", "path", "median of each group"], rows
    ) + f"""

{figure}

UDP rows ("udp ..."): groups of {MEMBERS} UDP sockets, in the same rounds; each round
sends {connections} datagrams to each, and "vs select only" is against the
select-only floor on UDP sockets ("udp select only", {floor_udp:.0f} ns).  The
datagrams of every UDP row but "new flows" come from {len(known.clients.socks):,} client
sockets on fixed 4-tuples, each of which sent one datagram before the first
round: every datagram is one of a flow already in the table (path: "flow
table").  "udp rpctl, new flows" sends each datagram from a new source: a
lookup that misses, the weighted table, and an insert.

Goal: a datagram of a known flow within 60 ns of the select-only floor.
Measured: **{round(ns["udp rpctl, known flow"] - floor_udp):+d} ns** ({ns["udp rpctl, known flow"]:.0f}
against {floor_udp:.0f} ns; without flow affinity {round(ns["udp rpctl, no flows"] - floor_udp):+d} ns, a new
flow {round(ns["udp rpctl, new flows"] - floor_udp):+d} ns).  rpctl's flow table is an array of
8-way sets of two cache lines (docs/decisions/0010): one inlined lookup, no hash map.
References: an LRU hash map keyed by the kernel's hash of the 4-tuple costs
{round(ns["udp flow by hash"] - floor_udp):+d} ns over the floor, keyed by the 4-tuple itself
{round(ns["udp flow by 4-tuple"] - floor_udp):+d} ns (a helper call to read the addresses and a
12-byte key to hash), an array of 4-way sets of one cache line each
{round(ns["udp flow in 4-way sets"] - floor_udp):+d} ns: with
{len(known.clients.socks):,} flows taking turns, the flow table's entries are rarely in cache
when their flow's next datagram comes, and what a lookup costs is the cache lines it
misses: a hash map's bucket and element, a set's one or two lines.  With {FEW_FLOWS} flows
taking turns (their entries stay in cache) a known flow costs
**{round(ns[f"udp rpctl, known flow, {FEW_FLOWS} flows"] - floor_udp):+d} ns** in rpctl, the hash map's lookup alone
{round(ns[f"udp flow by hash, {FEW_FLOWS} flows"] - floor_udp):+d} ns and the 4-way sets'
{round(ns[f"udp flow in 4-way sets, {FEW_FLOWS} flows"] - floor_udp):+d} ns: the hash map's own work (a call, hashing the
key again, the bucket walk and the LRU's reference bit) is what the sets leave out.
The program stamps flows with the kernel's jiffies, which the verifier inlines
into one load: a clock helper call there cost about 35 ns more a datagram in a
side-by-side run (decision 0010).

Goal: weighted within 25 ns of the select-only floor.  Measured:
**{round(ns["rpctl weighted"] - floor_sel):+d} ns** ({ns["rpctl weighted"]:.0f} against {floor_sel:.0f} ns) on idle
listeners, and **{round(ns[WORKED + "rpctl weighted"] - ns[WORKED + "select only"]):+d} ns**
({ns[WORKED + "rpctl weighted"]:.0f} against {ns[WORKED + "select only"]:.0f} ns) on listeners whose worker processes accept
in a loop ("accepting workers": the program then shares the caches with busy
processes, and each line it touches (ctl, the generation's header, the slot
byte, the per-CPU counter) is more often a miss).
rpctl's program is {sizes["rpctl weighted"].xlated_prog_len // 8} instructions, nearly all of them the
unrolled fallback walk and the RSS hash; a weighted selection runs a few
dozen of them.

Where a map's values start: rpctl makes its array maps mappable
(BPF_F_MMAPABLE) for the layout alone.  The kernel then starts their values
on a page; a plain array's start 56 bytes into a cache line, where the
64-byte ctl straddles two lines and a flow set's first way is split over
two.  The same program on plain arrays (rows "..., unaligned", same rounds)
cost {step("udp rpctl, known flow", "udp rpctl, known flow" + UNALIGNED)} a datagram of a known flow,
{step(WORKED + "rpctl weighted", WORKED + "rpctl weighted" + UNALIGNED)} a connection to accepting workers and
{step("rpctl weighted", "rpctl weighted" + UNALIGNED)} one to idle listeners: compare with the
spread between the groups of one row (last column) before reading a
difference into it.

Where the nanoseconds go, from the ladder:
- the select itself ({step("return only", "select only")} over return only): the helper
  call, the socket array lookup and its checks; every steering program pays it;
- ctl and generation lookups ({step("select only", "+ lookups")}): two array lookups the
  verifier inlines into loads; they buy the atomic flip of a weight change
  (one write of ctl.gen makes a whole new table live);
- the slot ({step("+ lookups", "+ slot")}): one byte of the generation element already looked
  up, in a 1 KiB table that stays in cache: this buys weights, drains and
  minimal-disruption changes;
- the member's counter ({step("+ slot", "+ counter")}): an inlined per-CPU lookup and an add;
  it buys selected/observed share in status, the dashboard and metrics;
- the rest of rpctl's program ({step("+ counter", "rpctl weighted")}): the tests that send
  this connection past the other steps.  The program takes this path (and a
  known flow's) first, in straight lines of code (rp_short_cut): run in the
  steps' order, it jumped over the code of every other step, and the
  instruction-cache lines it met cost about 80 ns more (decision 0010).

The table's size is what matters most: the same program with the table
rpctl had before (65,536 u32 slots per generation in a map of their own,
256 KiB, "wide slots") costs {round(ns["wide slots"] - ns["+ counter"])} ns more: a cache (and TLB) miss
on nearly every new connection, because consecutive connections hash to
unrelated slots (docs/decisions/0005).  Drained members change nothing on
the path (the table simply does not name them).  CPU pinning costs the same
as weighted: the pin table is read instead of the slot table.  RSS pinning
({round(ns["rpctl rss pin"] - floor_sel):+d} ns over the floor) recomputes the NIC's Toeplitz hash: a helper call
to read the addresses (they lie before the transport header, out of the
program's direct reach; the ports are read in place), twelve loads from the
per-byte hash table (12 KiB for IPv4) and a division by the indirection
table's size, the price of following the NIC's queues without a NIC hash in
the packet's metadata.  In earlier runs of this benchmark, reading the
ports through a second helper call cost about 18 ns more, and a per-nibble
table (24 loads from 1.5 KiB instead of 12 from 12 KiB) about 17 ns more:
the byte table is not what misses.

Group size: over 256 sockets the select-only floor itself costs
{step("select only", "select only, 256")} more than over 4: each selection touches another socket (its
array entry and the socket's own fields), which is rarely in cache.
rpctl's weighted selection at 256 members stays {step("select only, 256", "rpctl weighted, 256")} over that
floor (at 4 members {step("select only", "rpctl weighted")} over the 4-socket one; at 64 members it
costs {step("rpctl weighted", "rpctl weighted, 64")} against 4): its own table is 1 KiB at any size.

Not measured here: the kernel's default selection runs no program, so
bpf_stats cannot see it; the end-to-end benchmark compares against it."""
    write_section(SECTION, body)

