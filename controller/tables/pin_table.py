"""Which member serves which CPU or receive queue, and the pin tables of a generation.  Pure.

CPU mode: the program selects pin[CPU it runs on].  The assignment comes
from an explicit NAME=CPU map, or from each member process's CPU affinity:
a member allowed on CPUs {2, 3} serves connections arriving on 2 and 3.
Affinity is only a sound source when it is unambiguous, so the assignment
is refused when a member may run on every CPU (it has no CPU of its own)
or when two members may run on one CPU (which of them is local?).

RSS mode: the program selects pin[queue the NIC chose].  A queue belongs
to the member of the CPU its interrupt fires on, so the same CPU
assignment, composed with the device's queue -> IRQ -> CPU chain, gives
the queue assignment.

The tables live in the generation element (abi.RpGen) and flip with the
weights: Group.publish() carries the live generation's pins over and marks
the entries of members that cannot take a connection now (draining, weight
0, gone) RP_PIN_UNAVAILABLE, so the program counts a pin fallback there
and uses the weighted table.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Optional, Sequence

from ..contract import abi
from ..contract.errors import InvalidInput
from ..contract.refs import Param
from . import toeplitz

__all__ = [
    "MODE_NAMES",
    "PinPlan",
    "assign_from_affinity",
    "assign_from_map",
    "format_cpus",
    "mode_name",
    "next_gen",
    "parse_cpus",
    "pins_by_member",
    "queue_assignment",
    "refresh",
    "write_plan",
]

MODE_NAMES = {abi.RP_MODE_WEIGHTED: "weighted", abi.RP_MODE_CPU: "cpu", abi.RP_MODE_RSS: "rss"}


def mode_name(mode: int) -> str:
    return MODE_NAMES.get(mode, f"unknown({mode})")


# CPU lists ("0-3,8") --------------------------------------------------------------


MAX_CPU = 65535  # past any kernel's NR_CPUS (8192): a list that names one is damaged


def _number(text: str) -> bool:
    return text.isascii() and text.isdigit()  # "²".isdigit() holds, and int() refuses it


def parse_cpus(text: str) -> frozenset[int]:
    """A kernel CPU list (/sys/devices/system/cpu/online, smp_affinity_list) -> CPU numbers."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        if not _number(lo) or (sep and not _number(hi)):
            raise ValueError(f"not a CPU list: {text.strip()!r}")
        first, last = int(lo), int(hi) if sep else int(lo)
        if last < first or last > MAX_CPU:
            raise ValueError(f"not a CPU list: {text.strip()!r}")
        cpus.update(range(first, last + 1))
    return frozenset(cpus)


def format_cpus(cpus: Iterable[int]) -> str:
    """CPU numbers -> the kernel's list form, "0-3,8"."""
    ordered = sorted(set(cpus))
    runs: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        runs.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(runs)


# Assignments ----------------------------------------------------------------------


def _check_cpu(cpu: int, online: frozenset[int], what: str) -> None:
    if cpu not in online:
        raise InvalidInput(f"{what}: CPU {cpu} is not online (online: {format_cpus(online)})")
    if cpu >= abi.RP_MAX_PINS:
        raise InvalidInput(f"{what}: CPU {cpu} is past the {abi.RP_MAX_PINS} CPUs a pin table covers")


def assign_from_map(mapping: Mapping[str, int], members: Iterable[str], online: frozenset[int]) -> dict[int, str]:
    """NAME=CPU pairs -> {cpu: name}; refuses unknown members, offline CPUs and a CPU given twice."""
    known = set(members)
    out: dict[int, str] = {}
    for name, cpu in mapping.items():
        if name not in known:
            raise InvalidInput(f"pin cpu: no member {name!r} in the group")
        _check_cpu(cpu, online, f"pin cpu: {name}")
        if cpu in out:
            raise InvalidInput(f"pin cpu: {out[cpu]} and {name} are both mapped to CPU {cpu}; give each its own")
        out[cpu] = name
    if not out:
        raise InvalidInput("pin cpu: the map names no member")
    return out


def assign_from_affinity(affinity: Mapping[str, Iterable[int]], online: frozenset[int]) -> dict[int, str]:
    """{member name: CPUs its process may run on} -> {cpu: name}.

    Refuses, naming the members: a member that may run on every online CPU,
    and a CPU that two members may run on.  CPUs no member runs on stay
    unassigned (their connections use the weighted table).
    """
    if not affinity:
        raise InvalidInput("pin cpu: the group has no member to pin")
    out: dict[int, str] = {}
    for name in sorted(affinity):
        allowed = frozenset(affinity[name]) & online
        if not allowed:
            raise InvalidInput(f"pin cpu: {name} may only run on offline CPUs")
        if allowed == online:
            raise InvalidInput(
                f"pin cpu: {name} may run on every CPU ({format_cpus(online)}), so it has no CPU of its own: "
                "restrict its process (taskset -pc CPU PID) or give ", Param("mapping"),
            )
        for cpu in sorted(allowed):
            other = out.get(cpu)
            if other is not None:
                raise InvalidInput(
                    f"pin cpu: {other} and {name} may both run on CPU {cpu}: "
                    "give each its own CPUs (taskset -pc) or give ", Param("mapping"),
                )
            _check_cpu(cpu, online, f"pin cpu: {name}")
            out[cpu] = name
    return out


def queue_assignment(
    queue_cpus: Mapping[int, Optional[int]], cpu_members: Mapping[int, str]
) -> tuple[dict[int, str], list[int]]:
    """{queue: CPU its interrupt fires on, None if unknown} and {cpu: member}
    -> ({queue: member}, queues left to the weighted table)."""
    out: dict[int, str] = {}
    unassigned: list[int] = []
    for queue in sorted(queue_cpus):
        cpu = queue_cpus[queue]
        name = cpu_members.get(cpu) if cpu is not None else None
        if name is None:
            unassigned.append(queue)
        else:
            out[queue] = name
    return out, unassigned


# Generations ----------------------------------------------------------------------


@dataclass
class PinPlan:
    """A pinned mode as it is written into a generation."""

    mode: int
    pins: Mapping[int, int] = field(default_factory=dict)  # CPU or queue -> member index
    dev: str = ""                                          # RSS mode: the device
    rss_flags: int = 0                                     # abi.RP_RSS_*
    indir: Sequence[int] = ()                              # RSS indirection table: hash % size -> queue
    key: bytes = b""                                       # RSS key (Toeplitz)


WEIGHTED = PinPlan(abi.RP_MODE_WEIGHTED)


def _clear_pins(gen: abi.RpGen) -> None:
    for i in range(abi.RP_MAX_PINS):
        gen.pin[i] = abi.RP_NO_MEMBER


def write_plan(gen: abi.RpGen, plan: PinPlan) -> None:
    """Write `plan` into a fresh generation (mode, pin table, RSS tables)."""
    gen.mode = plan.mode
    _clear_pins(gen)
    for key, idx in plan.pins.items():
        if not 0 <= key < abi.RP_MAX_PINS:
            raise InvalidInput(f"pin: {key} is past the {abi.RP_MAX_PINS} entries of a pin table")
        if not 0 <= idx < abi.RP_MAX_MEMBERS:
            raise ValueError(f"pin: member index {idx} out of range")
        gen.pin[key] = idx
    if plan.mode != abi.RP_MODE_RSS:
        return
    if not 0 < len(plan.indir) <= abi.RP_RSS_MAX_INDIR:
        raise InvalidInput(f"pin rss: an indirection table of {len(plan.indir)} entries (1..{abi.RP_RSS_MAX_INDIR})")
    raw = plan.dev.encode()
    if len(raw) >= abi.RP_IFNAME_LEN:
        raise InvalidInput(f"pin rss: device name {plan.dev!r} is too long")
    gen.pin_dev = raw
    gen.rss_flags = plan.rss_flags
    gen.rss_indir_size = len(plan.indir)
    for i, queue in enumerate(plan.indir):
        gen.rss_indir[i] = queue
    # An IPv4-only key (16..39 bytes) fills the rows IPv4 needs; IPv6 is
    # then not hashed (rss_flags says so) and its rows stay zero.
    rows = max(0, min(abi.RP_RSS_INPUT_MAX, len(plan.key) - 4))
    for i, row in enumerate(toeplitz.byte_tables(plan.key, rows)):
        gen.rss_hash[i] = (ctypes.c_uint32 * 256)(*row)


def next_gen(live: Optional[abi.RpGen], plan: Optional[PinPlan]) -> abi.RpGen:
    """The generation to publish next: `plan` if given, else the live one's pin state.

    live[], n_live and published_ns are left for the caller to fill.
    """
    if plan is None and live is not None and live.mode != abi.RP_MODE_WEIGHTED:
        gen = abi.RpGen.from_buffer_copy(live)
        ctypes.memset(ctypes.addressof(gen.live), 0, ctypes.sizeof(gen.live))
        return gen
    gen = abi.RpGen()
    write_plan(gen, plan or WEIGHTED)
    return gen


def refresh(gen: abi.RpGen, present: Iterable[int], available: Iterable[int]) -> None:
    """Mark each pin entry for what its member can do in this generation.

    `present`: member indexes of the generation; `available`: those that
    may take a connection (not draining, weight > 0, socket open).  An
    entry of a member that left is cleared: its index may be reused.
    """
    if gen.mode == abi.RP_MODE_WEIGHTED:
        return
    present, available = set(present), set(available)
    for i in range(abi.RP_MAX_PINS):
        entry = gen.pin[i]
        if entry == abi.RP_NO_MEMBER:
            continue
        idx = entry & ~abi.RP_PIN_UNAVAILABLE
        if idx not in present:
            gen.pin[i] = abi.RP_NO_MEMBER
        elif idx in available:
            gen.pin[i] = idx
        else:
            gen.pin[i] = idx | abi.RP_PIN_UNAVAILABLE


def pins_by_member(gen: Optional[abi.RpGen]) -> dict[int, list[int]]:
    """{member index: the CPUs (CPU mode) or queues (RSS mode) pinned to it}."""
    out: dict[int, list[int]] = {}
    if gen is None or gen.mode == abi.RP_MODE_WEIGHTED:
        return out
    for i in range(abi.RP_MAX_PINS):
        entry = gen.pin[i]
        if entry != abi.RP_NO_MEMBER:
            out.setdefault(entry & ~abi.RP_PIN_UNAVAILABLE, []).append(i)
    return out
