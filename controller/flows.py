"""A UDP group's flow table read back: live flows per member, entries, evictions.

The program alone writes the table (map "flows"); user space only walks
it, with batch lookups.  A flow is live when it was seen within the
group's idle timeout and its member still holds the socket the flow was
placed on (same incarnation in the live generation): exactly the flows
the program would still send to that member.
"""

from __future__ import annotations

import collections
import ctypes
import struct
import time
from dataclasses import dataclass, field

from . import abi
from .group import Group

_FLOW = struct.Struct("=IIQ")
assert _FLOW.size == ctypes.sizeof(abi.RpFlow)


@dataclass
class FlowTable:
    """What a group's flow table holds now."""

    size: int                   # entries it can hold
    entries: int                # entries it holds (live or not)
    evictions: int              # entries the LRU dropped to make room
    live: dict[int, int] = field(default_factory=dict)  # member index -> live flows


# Linux's clock id (Python's time module does not name it).
CLOCK_MONOTONIC_COARSE = 6


def now_ns() -> int:
    """The program's clock: bpf_ktime_get_coarse_ns() reads CLOCK_MONOTONIC_COARSE."""
    return time.clock_gettime_ns(CLOCK_MONOTONIC_COARSE)


def read_flows(g: Group, ctl: abi.RpCtl, gen: abi.RpGen, inserts: int) -> FlowTable:
    """Walk the flow table of a group with flow affinity.  `inserts` is the
    group's flow_inserts counter, read before the walk: entries the program
    adds during the walk then never count as evictions."""
    raw = g.maps["flows"].read_hash_values(abi.RpFlow, ctl.flow_table_size)
    entries = len(raw) // _FLOW.size
    # Fresh: seen within the idle timeout (or after this clock reading, by
    # another CPU).  Counted by (member, incarnation) first: a table of
    # 65,536 flows is walked in a few tens of milliseconds.
    oldest = now_ns() - ctl.flow_idle_ms * 1_000_000
    fresh = collections.Counter((m, i) for m, i, seen in _FLOW.iter_unpack(raw) if seen >= oldest)
    current = list(gen.incarnation)
    live: dict[int, int] = {}
    for (member, incarnation), n in fresh.items():
        if member < abi.RP_MAX_MEMBERS and incarnation != abi.RP_NO_INCARNATION and current[member] == incarnation:
            live[member] = live.get(member, 0) + n
    return FlowTable(ctl.flow_table_size, entries, max(0, inserts - entries), live)
