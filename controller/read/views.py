"""The read model: what a group and its members look like to every reader.

status, weights, the dashboard, the metrics exporter and the write
commands' checks all read groups through here, so they never disagree on
a member's state or a counter's name.

One name per counter, from C to the screen: COUNTERS' names are the fields
of struct rp_group_stats and rp_member_stats in bpf/rpctl.h, the
attributes of GroupView and MemberView, the keys of `status --json`, the
metric names (rpctl_group_<name>_total, rpctl_member_<name>_total) and,
with spaces for underscores, the labels on screen.

Reading takes no lock: every view is built from one read of the live
generation, which a writer replaces with one map update.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Optional

from ..contract import abi
from ..contract.errors import NotFound
from ..kernel import sockets
from ..store.flows import FlowTable, read_flows
from ..store.generation import Group, ctl_endpoint
from ..store.membership import mark_of
from ..store.options import HASH, balance_of
from ..store.lookup import resolve_group
from ..store.policy import draining_flag, is_live
from ..store.state import Layout
from ..tables import pin_table, quic
from .generation_views import GenerationView, generation_views, verdict_text

if TYPE_CHECKING:
    from ..kernel import diag

    # (protocol name, port) -> {cookie: what sock_diag says of it}: where a read finds a
    # group's listeners (port_listeners, or a SharedDump over several groups).
    ListenerSource = Callable[[str, int], dict[int, diag.SocketDiag]]


class MemberState(str, enum.Enum):
    """A member's state, in the order states are listed everywhere.

    A str whose value is the word JSON documents, metric labels and screens
    show: it compares and hashes as that word, and str() and format() give
    it (not "MemberState.ACTIVE").
    """

    ACTIVE = "active"
    THROTTLED = "throttled"
    DRAINING = "draining"
    DRAINED = "drained"
    GONE = "gone"

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


# The states under names of their own (the drain, the launcher and the Prometheus source
# read these), and all of them in order.
ACTIVE, THROTTLED, DRAINING, DRAINED, GONE = MemberState
STATES = tuple(MemberState)

# An adaptive group whose queues serve has not sampled for this long has no serve
# looking after it (killed, or not started): its status says so.  Serve samples
# at least every adaptive_interval_ms (at most 125 ms) and writes the map at
# least every 0.5 s.
ADAPTIVE_UNSAMPLED_AFTER = 2.0


@dataclass(frozen=True)
class Counter:
    """A counter of the program: `name` is its C field, attribute, JSON key and metric name."""

    name: str
    help: str

    @property
    def label(self) -> str:
        """How a screen writes it: the name with spaces."""
        return self.name.replace("_", " ")


# struct rp_group_stats, in its order.
GROUP_COUNTERS = (
    Counter("slot_misses", "Selections whose slot's socket was gone: re-hashed into the weighted table"),
    Counter("no_live_member", "Selections with no live member: the kernel chose the socket"),
    Counter("pin_fallbacks", "Pinned modes: the member of the CPU or queue was draining or gone"),
    Counter("pin_unassigned", "Pinned modes: no member pinned to the CPU or queue"),
    Counter("rss_unhashed", "RSS mode: packets whose NIC hash could not be recomputed"),
    Counter("flow_evictions", "UDP: live flows forgotten to make room for new ones in a full flow table"),
    Counter("quic_unknown_server_id", "QUIC packets whose server id named no live member (weights chose)"),
    Counter("throttle_skips", "Adaptive: selections whose slot's member was throttled, given to another member"),
)

# struct rp_member_stats, in its order.
MEMBER_COUNTERS = (
    Counter("selected", "New connections or datagrams steered to the member through its slots"),
    Counter("fallback", ("New connections or datagrams given to the member because their slot's socket was gone "
                         "or its member throttled")),
    Counter("migrated", "Queued connections of a closing listener placed on the member"),
    Counter("pinned", "New connections or datagrams given to the member as the one of their CPU or queue"),
    Counter("flow_datagrams", "UDP: datagrams sent to the member by their flow in the flow table"),
    Counter("flows_created", "UDP: new flows (or flows idle past the timeout) placed on the member"),
    Counter("flows_reassigned", "UDP: flows placed on the member because their member's socket was gone"),
    Counter("quic_routed", "QUIC packets sent to the member by the server id of their connection id"),
)


@dataclass
class MemberView:
    """One member as status, weights, the dashboard and the metrics show it."""

    index: int
    name: str
    pid: int
    fd: int
    cookie: int
    weight: int
    draining: bool
    gone: bool
    selected: int
    fallback: int
    migrated: int
    since_publish: int          # selections since the live table was published
    target_share: float         # of the live table
    observed_share: Optional[float] = None  # since the live table was published
    queue: Optional[int] = None  # accept-queue depth (TCP) or bytes queued (UDP)
    registered_ns: int = 0
    pinned: int = 0             # chosen as the member of its CPU or RSS queue
    pins: list[int] = field(default_factory=list)  # its CPUs (cpu mode) or receive queues (rss mode)
    flow_datagrams: int = 0
    flows_created: int = 0
    flows_reassigned: int = 0
    flows: Optional[int] = None  # live UDP flows it holds; None: the group has no flow table
    quic_routed: int = 0
    quic_server_id: Optional[str] = None  # hex, in a QUIC group
    # New connections (datagrams) per second when the source measured it (Prometheus' rate()
    # over a window); None for a local read, whose readers measure it between polls.
    rate: Optional[float] = None
    throttled: str | None = None  # adaptive: why serve throttled it ("queue 37, others <= 2"), None when not
    shared: bool = False  # several processes serve its socket (a prefork server's children)
    # Every process serving its socket: [pid] for a member of one process; for a shared one, those
    # found serving it when the view was read with queues ([] when none is: its parent only holds
    # it, between two generations of children), else [pid].
    processes: list[int] = field(default_factory=list)
    generation: int = 0           # its server generation (decision 0021), 0 when not known
    canary: bool = False          # its generation is a canary
    verdict: Optional[str] = None  # on its generation: "promoted", "rolled back"; None before any

    @property
    def state(self) -> MemberState:
        if self.gone:
            return GONE
        if self.draining:
            # A UDP member's live flows keep coming to it while it drains.
            return DRAINED if self.queue == 0 and not self.flows else DRAINING
        if self.throttled is not None:
            return THROTTLED
        return ACTIVE

    @property
    def counters(self) -> dict[str, int]:
        return {c.name: getattr(self, c.name) for c in MEMBER_COUNTERS}

    @property
    def selections(self) -> int:
        """Every connection (datagram) the program placed on the member, however it chose it."""
        return sum(getattr(self, name) for name in abi.SELECTION_COUNTERS)


@dataclass(frozen=True)
class UnmanagedListener:
    """A socket of the group's endpoint (protocol, address, port, this namespace)
    that is not a member: while a member is live it gets nothing."""

    cookie: int
    inode: int
    pid: Optional[int]  # a process holding it (the lowest pid); None when none is visible
    comm: str           # that process's name, "" without one


@dataclass
class GroupView:
    name: str
    proto: str
    family: int
    addr: str
    port: int
    prog_id: int
    gen: int
    mode: str
    published_ns: int
    created_ns: int
    migration: bool = True
    members: list[MemberView] = field(default_factory=list)
    slot_misses: int = 0
    no_live_member: int = 0
    pin_dev: str = ""           # rss mode: the device whose queues are pinned
    pin_fallbacks: int = 0
    pin_unassigned: int = 0
    rss_unhashed: int = 0
    flow_evictions: int = 0
    flow_table: Optional[FlowTable] = None  # UDP groups with flow affinity
    flow_idle_timeout: float = 0.0          # seconds, of the flow table
    quic_unknown_server_id: int = 0
    quic_server_id_length: int = 0  # 0: no QUIC routing
    balance: str = HASH         # what the weighted table is indexed by (store/options.py: hash, datagram)
    throttle_skips: int = 0
    adaptive: bool = False      # serve may throttle members whose queue builds (their state says so)
    # Adaptive groups read on this host: seconds since rpctl serve last sampled the queues (inf:
    # never); None when not known (not adaptive, or read through Prometheus).
    adaptive_sampled_ago: Optional[float] = None
    # Listeners of the endpoint that are not members; None when not read (no sock_diag dump).
    unmanaged: Optional[list[UnmanagedListener]] = None
    # The Prometheus scrape target (host:port of an exporter) a group read through Prometheus
    # comes from; None for a group of this host.
    instance: Optional[str] = None
    # Its server generations, oldest first (controller/read/generation_views.py).
    generations: list[GenerationView] = field(default_factory=list)
    # Read through Prometheus: its exporter was scraped within the last hour but is down now (or
    # cannot read the pinned state), so nothing of it is known but its name and endpoint.
    unreachable: bool = False

    @property
    def ref(self) -> str:
        """What tells the group apart from every other one a reader shows: its name here,
        instance/name when read through Prometheus (every host may have a group `web`)."""
        return self.name if self.instance is None else f"{self.instance}/{self.name}"

    @property
    def key(self) -> sockets.EndpointKey:
        return sockets.EndpointKey(self.proto, self.family, self.addr, self.port)

    @property
    def endpoint(self) -> str:
        return self.key.text

    @property
    def counters(self) -> dict[str, int]:
        return {c.name: getattr(self, c.name) for c in GROUP_COUNTERS}

    @property
    def adaptive_unsampled(self) -> bool:
        """Adaptive, and no rpctl serve samples its queues: a SIGKILLed serve
        leaves the flag set (its lease alone ended the throttle)."""
        return self.adaptive and self.adaptive_sampled_ago is not None and \
            self.adaptive_sampled_ago > ADAPTIVE_UNSAMPLED_AFTER

    def member(self, name: str) -> MemberView:
        for m in self.members:
            if m.name == name:
                return m
        raise NotFound(f"no member {name!r} in group {self.name!r}")


def port_listeners(proto: str, port: int) -> dict[int, diag.SocketDiag]:
    """The sockets of one port: a sock_diag dump per address family, filtered by port in the kernel."""
    from ..kernel import diag

    return diag.listeners(sockets.proto_number(proto), port=port)


class SharedDump:
    """The sockets of every port, dumped once per protocol and shared by the groups of one
    read: reading 256 groups takes two dumps of the namespace's listeners, not 256 walks
    of the kernel's socket tables (one per group's port).  Each group gets its port's
    sockets, as port_listeners gives them.  A ListenerSource."""

    def __init__(self) -> None:
        self.by_proto: dict[str, dict[int, dict[int, diag.SocketDiag]]] = {}  # proto -> port -> cookie -> it

    def __call__(self, proto: str, port: int) -> dict[int, diag.SocketDiag]:
        if proto not in self.by_proto:
            from ..kernel import diag

            by_port: dict[int, dict[int, diag.SocketDiag]] = {}
            for cookie, d in diag.listeners(sockets.proto_number(proto)).items():
                by_port.setdefault(d.local_port, {})[cookie] = d
            self.by_proto[proto] = by_port
        return self.by_proto[proto].get(port, {})


def read_group(g: Group, with_queues: Optional[bool] = True,
               listeners: ListenerSource = port_listeners) -> GroupView:
    """The view of an open group.  with_queues=None reads queue depths only
    when a member is draining (its state, draining or drained, depends on
    it): a sock_diag dump per address family, which most reads can skip.
    `listeners` gives the sockets of the group's port (the dump)."""
    ctl = g.ctl()
    gen = ctl.gen & 1
    gen_info = g.maps["gens"].get(gen, abi.RpGen)
    members = g.members()
    policies = g.live_policies(members, gen)
    totals = g.member_totals(policies)
    group_totals = g.group_totals()
    key = ctl_endpoint(ctl)
    view = GroupView(
        name=g.name,
        proto=key.proto,
        family=key.family,
        addr=key.addr,
        port=key.port,
        prog_id=g.prog_id(),
        gen=gen,
        mode=pin_table.mode_name(gen_info.mode) if gen_info else "weighted",
        published_ns=gen_info.published_ns if gen_info else 0,
        created_ns=ctl.created_ns,
        migration=bool(ctl.flags & abi.RP_CTL_MIGRATE),
        adaptive=bool(ctl.flags & abi.RP_CTL_ADAPTIVE),
        pin_dev=gen_info.pin_dev.decode(errors="replace") if gen_info else "",
        quic_server_id_length=ctl.quic_sid_len if ctl.flags & abi.RP_CTL_QUIC else 0,
        balance=balance_of(ctl),
        **{c.name: group_totals[c.name] for c in GROUP_COUNTERS},
    )
    pins = pin_table.pins_by_member(gen_info)
    throttled = {}
    if view.adaptive:
        t = g.maps["throttle"].get(0, abi.RpThrottle)
        throttled = throttle_reasons(t, view.proto)
        sampled = t.sampled_ns if t is not None else 0
        view.adaptive_sampled_ago = max(0.0, (time.monotonic_ns() - sampled) / 1e9) if sampled else math.inf
    for idx, pol in policies.items():
        m = members[idx]
        counts = totals[idx]
        member = MemberView(
            index=idx,
            name=m.name.decode(errors="replace"),
            pid=m.pid,
            fd=m.fd,
            cookie=m.cookie,
            weight=pol.weight,
            draining=draining_flag(pol),
            gone=not g.socket_open(idx, m),
            pins=pins.get(idx, []),
            since_publish=max(0, abi.selections(counts) - m.base_selections[gen]),
            target_share=0.0,
            registered_ns=m.registered_ns,
            quic_server_id=(quic.format_server_id(m.quic_server_id, view.quic_server_id_length)
                            if m.flags & abi.RP_MEMBER_QUIC and view.quic_server_id_length else None),
            throttled=throttled.get(idx),
            shared=bool(m.flags & abi.RP_MEMBER_SHARED),
            processes=[m.pid],
            **counts,
        )
        mark = mark_of(m)
        member.generation, member.canary, member.verdict = mark.server_gen, mark.canary, verdict_text(mark.verdict)
        view.members.append(member)
    set_target_shares(view.members)
    if ctl.flags & abi.RP_CTL_FLOWS and gen_info is not None:
        view.flow_table = read_flows(g, ctl, gen_info)
        view.flow_idle_timeout = ctl.flow_idle_ms / 1000
        for member in view.members:
            member.flows = view.flow_table.live.get(member.index, 0)
    since_sum = sum(m.since_publish for m in view.members)
    for member in view.members:
        member.observed_share = member.since_publish / since_sum if since_sum else None
    if with_queues is None:
        with_queues = any(m.draining for m in view.members)
    if with_queues:
        # One dump gives both the members' queues and the listeners that are not members.
        found = listeners(view.proto, view.port)
        for member in view.members:
            member.queue = found[member.cookie].rqueue if member.cookie in found else None
        view.unmanaged = unmanaged_listeners(view, found.values())
        set_shared_processes(view.members, found)
    view.generations = generation_views(view.members)
    return view


def set_target_shares(members: list[MemberView]) -> None:
    """Each member's share of the live table: its weight over the live members'
    (store.policy.is_live), 0 for the others."""
    live = {m.index: m.weight for m in members if is_live(m.weight, m.draining, not m.gone)}
    weight_sum = sum(live.values())
    for m in members:
        m.target_share = live.get(m.index, 0) / weight_sum if weight_sum else 0.0


def set_shared_processes(members: list[MemberView], found: dict[int, diag.SocketDiag]) -> None:
    """The processes serving each shared member's socket (`found`: the dump by cookie), read
    from /proc (one scan, as discover does) only when the group has a shared member."""
    inodes = {m.index: found[m.cookie].inode for m in members if m.shared and not m.gone and m.cookie in found}
    if not inodes:
        return
    from ..kernel.discover import servers_of

    servers = servers_of(inodes.values())
    for m in members:
        if m.index in inodes:
            m.processes = [h.pid for h in servers.get(inodes[m.index], [])]


def throttle_reasons(t: Optional[abi.RpThrottle], proto: str) -> dict[int, str]:
    """The members an adaptive group's serve throttles now (index -> why, in the
    unit of the `proto` group's queue), from the element of the map "throttle":
    none once its lease ran out (the program ignores it then)."""
    if t is None or t.lease_ns <= time.monotonic_ns():
        return {}
    from ..tables.adaptive import BYTES, Reason  # adaptive groups only

    unit = BYTES if proto == "udp" else ""  # a UDP queue is counted in bytes
    return {i: str(Reason(t.queue[i], t.others[i], unit)) for i in range(abi.RP_MAX_MEMBERS) if t.bits[i // 64] >> (i % 64) & 1}


def unmanaged_listeners(view: GroupView, found: Iterable[diag.SocketDiag]) -> list[UnmanagedListener]:
    """The sockets of view's endpoint among `found` (a sock_diag dump) that are not
    members.  Their processes are looked up (a scan of /proc) only when there is one."""
    cookies = {m.cookie for m in view.members}
    strays = [d for d in found if d.cookie not in cookies and d.family == view.family
              and d.local_port == view.port and d.address == view.addr]
    if not strays:
        return []
    from ..kernel.discover import holders_of

    holders = holders_of(d.inode for d in strays)
    out = []
    for d in strays:
        first = next(iter(holders.get(d.inode, [])), None)
        out.append(UnmanagedListener(d.cookie, d.inode, first.pid if first else None, first.comm if first else ""))
    return sorted(out, key=lambda u: (u.pid is None, u.pid or 0, u.cookie))


def read_view(group: Optional[str] = None, layout: Optional[Layout] = None,
              with_queues: Optional[bool] = True) -> GroupView:
    """The view of one group: the one named, or the only one there is."""
    layout = layout or Layout(root=None)
    with Group.open(resolve_group(group, layout), layout) as g:
        return read_group(g, with_queues)


def read_views(
    group: Optional[str] = None, layout: Optional[Layout] = None, with_queues: Optional[bool] = True
) -> list[GroupView]:
    """Views of one group, or of every group of this namespace.

    Reading every group, a group unloaded between the listing and its
    reading is not an error (readers that poll, the dashboard and the
    exporter, see it gone): the groups are listed again, up to three times.
    A group asked for by name that does not exist is NotFound.
    """
    layout = layout or Layout(root=None)
    if group is not None:
        return [read_view(group, layout, with_queues)]
    for attempt in range(3):
        try:
            names = layout.groups()
            listeners = SharedDump() if len(names) > 1 else port_listeners
            out = []
            for name in names:
                with Group.open(name, layout) as g:
                    out.append(read_group(g, with_queues, listeners))
            return out
        except NotFound:
            if attempt == 2:
                return []
    return []
