"""A UDP group's flow table read back: live flows per member, entries.

The program alone writes the table (map "flows", sets of RP_FLOW_WAYS
flows); user space only reads it, in one batch lookup.  A flow is live
when it was seen within the group's idle timeout and its member still
holds the socket the flow was placed on (same incarnation in the live
generation): exactly the flows the program would still send to that
member.  Two CPUs that place one new flow at once may both write it, in
two ways of its set: a set's flows are counted once per tag.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from ..contract import abi
from ..kernel import jiffies
from .generation import Group

# struct rp_flow (tag, member, flags, incarnation, seen) as struct.Struct: a whole
# table is unpacked with iter_unpack, set by set, without a ctypes object per way.
FLOW_WAY = struct.Struct("=IHHII")
FLOW_SET_SIZE = FLOW_WAY.size * abi.RP_FLOW_WAYS


@dataclass
class FlowTable:
    """What a group's flow table holds now."""

    size: int                   # flows it can hold
    entries: int                # flows it holds, live or idle
    live: dict[int, int] = field(default_factory=dict)  # member index -> live flows


def _age(now: int, seen: int) -> int:
    """now - seen in ticks, as the program takes it: 32 bits, signed."""
    d = (now - seen) & 0xFFFFFFFF
    return d - (1 << 32) if d & 0x80000000 else d


def read_flows(g: Group, ctl: abi.RpCtl, gen: abi.RpGen) -> FlowTable:
    """Read the flow table of a group with flow affinity."""
    raw = g.maps["flows"].read_bytes(abi.RpFlowSet, ctl.flow_table_size // abi.RP_FLOW_WAYS)
    idle = ctl.flow_idle_ticks
    now = jiffies.now()
    live: dict[int, int] = {}
    entries = 0
    for start in range(0, len(raw), FLOW_SET_SIZE):
        seen_tags = set()
        for tag, member, _flags, incarnation, seen in FLOW_WAY.iter_unpack(raw[start:start + FLOW_SET_SIZE]):
            if not tag or tag in seen_tags:
                continue
            seen_tags.add(tag)
            entries += 1
            if _age(now, seen) > idle or member >= abi.RP_MAX_MEMBERS:
                continue
            if incarnation == abi.RP_NO_INCARNATION or gen.incarnation[member] != incarnation:
                continue
            live[member] = live.get(member, 0) + 1
    return FlowTable(ctl.flow_table_size, entries, live)
