"""Pin a group's connections to the member of their CPU or RSS queue, or stop.

Each operation validates everything (members, CPUs, device) before it
publishes one generation through Group.publish(): refused input changes
nothing, and the mode, pin table and RSS tables go live together.
Assignments are computed by controller/tables/pin_table.py (pure); the device is
described by controller/kernel/rss.py.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Optional

from ..contract import abi
from ..contract.errors import InvalidInput, NotFound, RpctlError
from ..contract.refs import Call, Param
from ..kernel import rss, sockets
from ..read.views import GroupView, read_group, read_view
from ..store.lookup import writing
from ..store.state import Layout
from ..tables.pin_table import (
    WEIGHTED,
    PinPlan,
    assign_from_affinity,
    assign_from_map,
    format_cpus,
    parse_cpus,
    queue_assignment,
)

__all__ = [
    "ChainRow", "Explanation", "PinResult", "explain_rss", "online_cpus", "pin_cpu", "pin_off", "pin_rss", "plan_pins",
]

Affinity = Callable[[int], Iterable[int]]


@dataclass
class PinResult:
    group: str
    mode: str
    assignment: dict[int, str]                 # CPU (cpu mode) or queue (rss mode) -> member
    unassigned: list[int] = field(default_factory=list)  # online CPUs / table queues left to the weighted table
    dev: str = ""


def online_cpus() -> frozenset[int]:
    with open("/sys/devices/system/cpu/online") as f:
        return parse_cpus(f.read())


def _affinities(pids: Mapping[str, int], affinity: Affinity) -> dict[str, frozenset[int]]:
    """Each member's allowed CPUs, from its process (pids: name -> pid of
    the members that can take connections)."""
    out = {}
    for name, pid in pids.items():
        try:
            out[name] = frozenset(affinity(pid))
        except ProcessLookupError:
            raise InvalidInput(
                f"pin cpu: process {pid} of {name} is gone, so its CPUs are unknown; give ", Param("mapping")
            ) from None
    return out


def _cpu_assignment(
    view: GroupView, mapping: Optional[Mapping[str, int]], online: frozenset[int], affinity: Affinity
) -> dict[int, str]:
    if mapping:
        return assign_from_map(mapping, [m.name for m in view.members], online)
    # A gone member (socket closed) takes nothing whatever its CPUs: it is left out.
    return assign_from_affinity(_affinities({m.name: m.pid for m in view.members if not m.gone}, affinity), online)


def _index(view: GroupView) -> dict[str, int]:
    return {m.name: m.index for m in view.members}


def _rss_plan(info: rss.RssInfo, proto: str, family: int, cpu_members: Mapping[int, str],
              index: Mapping[str, int]) -> tuple[PinPlan, dict[int, str], list[int]]:
    """The RSS pin plan, its queue -> member assignment and the queues left unassigned."""
    flags = rss.steering_flags(info, proto, family)
    queues, unassigned = queue_assignment(info.queue_cpus(), cpu_members)
    if not queues and "sysfs" in info.unsupported:
        raise InvalidInput(*rss.pin_rss_what(info.dev), ": ", info.unsupported["sysfs"])
    if not queues:
        raise InvalidInput(
            *rss.pin_rss_what(info.dev), ": no receive queue has its interrupt on one CPU of a member (see ",
            Call("explain_rss", Call("read_device", info.dev)), ")",
        )
    plan = PinPlan(abi.RP_MODE_RSS, {q: index[n] for q, n in queues.items()}, dev=info.dev,
                   rss_flags=flags, indir=list(info.indir), key=info.key)
    return plan, queues, unassigned


def plan_pins(
    mode: str,
    dev: str,
    index: Mapping[str, int],
    pids: Mapping[str, int],
    key: sockets.EndpointKey,
    online: Optional[frozenset[int]] = None,
    affinity: Affinity = os.sched_getaffinity,
) -> PinPlan:
    """The pin plan of `mode` ("weighted", "cpu", "rss") for members named in
    `index` (name -> index), each on the CPUs its process (`pids`: name -> pid
    of the members that can take connections) may run on: what pin cpu / pin
    rss publish, for a caller that publishes it with other changes."""
    if mode == "weighted":
        return WEIGHTED
    online = online if online is not None else online_cpus()
    cpu_members = assign_from_affinity(_affinities(pids, affinity), online)
    if mode == "cpu":
        return PinPlan(abi.RP_MODE_CPU, {cpu: index[n] for cpu, n in cpu_members.items()})
    return _rss_plan(rss.read_device(dev), key.proto, key.family, cpu_members, index)[0]


def pin_cpu(
    mapping: Optional[Mapping[str, int]] = None,
    group: Optional[str] = None,
    layout: Optional[Layout] = None,
    online: Optional[frozenset[int]] = None,
    affinity: Affinity = os.sched_getaffinity,
) -> PinResult:
    """CPU mode: each connection goes to the member of the CPU that handles it.

    `mapping` {member: CPU}; without it, each member process's affinity says.
    """
    online = online if online is not None else online_cpus()

    with writing(group, layout) as g:
        view = read_group(g, with_queues=False)
        assignment = _cpu_assignment(view, mapping, online, affinity)
        index = _index(view)
        g.publish({}, g.members(), pin=PinPlan(abi.RP_MODE_CPU, {cpu: index[n] for cpu, n in assignment.items()}))
        return PinResult(g.name, "cpu", assignment, sorted(online - set(assignment)))


def pin_rss(
    info: rss.RssInfo,
    mapping: Optional[Mapping[str, int]] = None,
    group: Optional[str] = None,
    layout: Optional[Layout] = None,
    online: Optional[frozenset[int]] = None,
    affinity: Affinity = os.sched_getaffinity,
) -> PinResult:
    """RSS mode: each connection goes to the member serving the queue the NIC
    put it on: queue -> its interrupt's CPU -> the member of that CPU."""
    online = online if online is not None else online_cpus()

    with writing(group, layout) as g:
        view = read_group(g, with_queues=False)
        cpu_members = _cpu_assignment(view, mapping, online, affinity)
        plan, queues, unassigned = _rss_plan(info, view.proto, view.family, cpu_members, _index(view))
        g.publish({}, g.members(), pin=plan)
        return PinResult(g.name, "rss", queues, unassigned, dev=info.dev)


def pin_off(group: Optional[str] = None, layout: Optional[Layout] = None) -> tuple[str, str]:
    """Back to weighted selection; returns (group, the mode it was in)."""

    with writing(group, layout) as g:
        was = read_group(g, with_queues=False).mode
        if was != "weighted":
            g.publish({}, g.members(), pin=WEIGHTED)
        return g.name, was


# --explain -------------------------------------------------------------------------


@dataclass
class ChainRow:
    queue: int
    table_share: float          # of the indirection table's entries
    irq: Optional[int]
    irq_name: str
    irq_cpus: str               # where it may fire (smp_affinity_list)
    cpu: Optional[int]          # where it fires
    member: Optional[str]


@dataclass
class Explanation:
    info: rss.RssInfo
    group: Optional[str]
    rows: list[ChainRow]
    problems: list[str]         # why `pin rss` would refuse
    notes: list[str] = field(default_factory=list)  # what is not known, without being a refusal


def explain_rss(
    info: rss.RssInfo,
    mapping: Optional[Mapping[str, int]] = None,
    group: Optional[str] = None,
    layout: Optional[Layout] = None,
    online: Optional[frozenset[int]] = None,
    affinity: Affinity = os.sched_getaffinity,
) -> Explanation:
    """The chain queue -> IRQ -> CPU -> member that `pin rss` would publish.  Changes nothing."""
    online = online if online is not None else online_cpus()
    problems: list[str] = []
    notes: list[str] = []
    view = None
    try:
        layout = layout or Layout(root=None)
        view = read_view(group, layout, with_queues=False)
    except NotFound as e:
        if group is not None:
            raise
        notes.append(f"members unknown: {e}")
    cpu_members: dict[int, str] = {}
    if view is not None:
        why = rss.rss_flags(info, view.proto, view.family)[1]
        if why:
            problems.append(why)
        try:
            cpu_members = _cpu_assignment(view, mapping, online, affinity)
        except RpctlError as e:
            problems.append(str(e))
    elif not info.indir:
        problems.append(f"the device has no RSS ({info.why_no_rss})")
    if "sysfs" in info.unsupported:
        problems.append(info.unsupported["sysfs"])
    queues = sorted(set(info.indir)) or list(range(info.rx_queues))
    rows = []
    for q in queues:
        irq = info.irqs.get(q)
        cpu = irq.cpu if irq else None
        rows.append(ChainRow(
            queue=q,
            table_share=info.table_share(q),
            irq=irq.number if irq else None,
            irq_name=irq.name if irq else "",
            irq_cpus=format_cpus(irq.cpus) if irq else "",
            cpu=cpu,
            member=cpu_members.get(cpu) if cpu is not None else None,
        ))
    return Explanation(info, view.name if view else None, rows, problems, notes)
