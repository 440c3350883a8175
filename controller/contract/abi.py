"""ctypes mirrors of bpf/rpctl.h, and the shape of every map of a group.

tests/unit/test_abi.py compiles the header and holds every struct here to
the C sizes and offsets, and every constant to its #define.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

u8, u16, u32, u64 = ctypes.c_uint8, ctypes.c_uint16, ctypes.c_uint32, ctypes.c_uint64

RP_ABI_VERSION = 5
RP_MAX_MEMBERS = 256
RP_SLOT_BITS = 10
RP_SLOTS = 1 << RP_SLOT_BITS
RP_SLOT_MASK = RP_SLOTS - 1
RP_GENERATIONS = 2
RP_NO_MEMBER = 0xFFFFFFFF
RP_NAME_LEN = 32
RP_MAX_PINS = 1024
RP_PIN_UNAVAILABLE = 0x80000000
RP_RSS_MAX_INDIR = 4096
RP_RSS_INPUT_MAX = 36
RP_IFNAME_LEN = 16
RP_FLOW_WAYS = 8
RP_FLOW_TABLE_DEFAULT = 65536
RP_FLOW_IDLE_MS_DEFAULT = 30000
RP_NO_INCARNATION = 0
RP_FLOW_AGAIN = 1
RP_QUIC_MAX_SID_LEN = 4
RP_QUIC_NO_ID = 0xFFFFFFFFFFFFFFFF

RP_MEMBER_USED = 1 << 0
RP_MEMBER_QUIC = 1 << 1
RP_MEMBER_SHARED = 1 << 2
RP_MEMBER_PROMOTED = 1 << 3
RP_MEMBER_ROLLED_BACK = 1 << 4
RP_MEMBER_CANARY = 1 << 5
RP_POLICY_PRESENT = 1 << 0
RP_POLICY_DRAINING = 1 << 1

RP_CTL_MIGRATE = 1 << 0
RP_CTL_FLOWS = 1 << 1
RP_CTL_QUIC = 1 << 2
RP_CTL_ADAPTIVE = 1 << 3
RP_CTL_SHARED = 1 << 4
RP_CTL_DATAGRAM = 1 << 5

RP_PROTO_TCP = 6
RP_PROTO_UDP = 17

RP_MODE_WEIGHTED = 0
RP_MODE_CPU = 1
RP_MODE_RSS = 2

RP_RSS_IPV4 = 1 << 0
RP_RSS_IPV4_PORTS = 1 << 1
RP_RSS_IPV6 = 1 << 2
RP_RSS_IPV6_PORTS = 1 << 3


class RpCtl(ctypes.Structure):
    """Mirrors struct rp_ctl in bpf/rpctl.h."""

    _fields_ = [
        ("abi_version", u32),
        ("gen", u32),
        ("proto", u32),
        ("family", u32),
        ("addr", u8 * 16),
        ("port", u16),
        ("slot", u16),
        ("flags", u32),
        ("created_ns", u64),
        ("flow_table_size", u32),
        ("flow_idle_ms", u32),
        ("quic_sid_len", u32),
        ("flow_idle_ticks", u32),
    ]


class RpGen(ctypes.Structure):
    """Mirrors struct rp_gen in bpf/rpctl.h."""

    _fields_ = [
        ("mode", u32),
        ("n_live", u32),
        ("published_ns", u64),
        ("slots", u8 * RP_SLOTS),
        ("live", u32 * RP_MAX_MEMBERS),
        ("incarnation", u32 * RP_MAX_MEMBERS),
        ("rss_flags", u32),
        ("rss_indir_size", u32),
        ("pin_dev", ctypes.c_char * RP_IFNAME_LEN),
        ("pin", u32 * RP_MAX_PINS),
        ("rss_indir", u16 * RP_RSS_MAX_INDIR),
        ("rss_hash", (u32 * 256) * RP_RSS_INPUT_MAX),
        ("quic_ids", u64 * RP_MAX_MEMBERS),
    ]


class RpPolicy(ctypes.Structure):
    """Mirrors struct rp_policy in bpf/rpctl.h."""

    _fields_ = [("weight", u32), ("flags", u32)]


class RpMember(ctypes.Structure):
    """Mirrors struct rp_member in bpf/rpctl.h."""

    _fields_ = [
        ("name", ctypes.c_char * RP_NAME_LEN),
        ("cookie", u64),
        ("pid", u32),
        ("fd", u32),
        ("flags", u32),
        ("incarnation", u32),
        ("registered_ns", u64),
        ("policy", RpPolicy * RP_GENERATIONS),
        ("base_selections", u64 * RP_GENERATIONS),
        ("quic_server_id", u32),
        ("server_gen", u32),
    ]


class RpMemberStats(ctypes.Structure):
    """Mirrors struct rp_member_stats in bpf/rpctl.h (one CPU's copy)."""

    _fields_ = [
        ("selected", u64),
        ("fallback", u64),
        ("migrated", u64),
        ("pinned", u64),
        ("flow_datagrams", u64),
        ("flows_created", u64),
        ("flows_reassigned", u64),
        ("quic_routed", u64),
    ]


class RpGroupStats(ctypes.Structure):
    """Mirrors struct rp_group_stats in bpf/rpctl.h (one CPU's copy)."""

    _fields_ = [
        ("slot_misses", u64),
        ("no_live_member", u64),
        ("pin_fallbacks", u64),
        ("pin_unassigned", u64),
        ("rss_unhashed", u64),
        ("flow_evictions", u64),
        ("quic_unknown_server_id", u64),
        ("throttle_skips", u64),
    ]


class RpThrottle(ctypes.Structure):
    """Mirrors struct rp_throttle in bpf/rpctl.h."""

    _fields_ = [
        ("lease_ns", u64),
        ("sampled_ns", u64),
        ("bits", u64 * (RP_MAX_MEMBERS // 64)),
        ("queue", u32 * RP_MAX_MEMBERS),
        ("others", u32 * RP_MAX_MEMBERS),
    ]


class RpHandoff(ctypes.Structure):
    """Mirrors struct rp_handoff in bpf/rpctl.h."""

    _fields_ = [
        ("slot", u32),
        ("flow_state", u32),
        ("hash", u32),
        ("_pad1", u32),
    ]


class RpFlow(ctypes.Structure):
    """Mirrors struct rp_flow in bpf/rpctl.h (a way of a set of the map "flows")."""

    _fields_ = [("tag", u32), ("member", u16), ("flags", u16), ("incarnation", u32), ("seen", u32)]


class RpFlowSet(ctypes.Structure):
    """Mirrors struct rp_flow_set in bpf/rpctl.h (an element of the map "flows")."""

    _fields_ = [("way", RpFlow * RP_FLOW_WAYS)]


# The counters of rp_member_stats that one selection adds one to: a
# member's selections are their sum (flows_created and flows_reassigned
# count flows, each also counted as a selection).
SELECTION_COUNTERS = ("selected", "fallback", "migrated", "pinned", "flow_datagrams", "quic_routed")


def selections(totals: dict[str, int]) -> int:
    """A member's selections, from its counters (Group.member_totals' rows)."""
    return sum(totals[name] for name in SELECTION_COUNTERS)


# Structs the header test checks, by C name.
STRUCTS = {
    "rp_ctl": RpCtl,
    "rp_gen": RpGen,
    "rp_policy": RpPolicy,
    "rp_member": RpMember,
    "rp_member_stats": RpMemberStats,
    "rp_group_stats": RpGroupStats,
    "rp_flow": RpFlow,
    "rp_flow_set": RpFlowSet,
    "rp_throttle": RpThrottle,
    "rp_handoff": RpHandoff,
}


# Map types, from include/uapi/linux/bpf.h (enum bpf_map_type): a group's maps, and the shared program's.
MAP_TYPE_ARRAY = 2
MAP_TYPE_PROG_ARRAY = 3
MAP_TYPE_PERCPU_ARRAY = 6
MAP_TYPE_LRU_HASH = 9
MAP_TYPE_ARRAY_OF_MAPS = 12
MAP_TYPE_REUSEPORT_SOCKARRAY = 20


@dataclass(frozen=True)
class MapSpec:
    """What one pinned map of a group must be: checked on every open."""

    name: str          # pin name in the group folder, and the C macro RP_FD_<NAME>
    map_type: int
    key_size: int
    value_size: int
    max_entries: int   # SIZED_AT_CREATION: rp_ctl.flow_table_size / RP_FLOW_WAYS


# max_entries of a map whose size a group's creation options set.
SIZED_AT_CREATION = 0

# Every map of a group.  The names are an API: pins and -DRP_FD_* macros.
GROUP_MAPS = (
    MapSpec("socks", MAP_TYPE_REUSEPORT_SOCKARRAY, 4, 8, RP_MAX_MEMBERS),
    MapSpec("ctl", MAP_TYPE_ARRAY, 4, ctypes.sizeof(RpCtl), 1),
    MapSpec("gens", MAP_TYPE_ARRAY, 4, ctypes.sizeof(RpGen), RP_GENERATIONS),
    MapSpec("members", MAP_TYPE_ARRAY, 4, ctypes.sizeof(RpMember), RP_MAX_MEMBERS),
    MapSpec("member_stats", MAP_TYPE_PERCPU_ARRAY, 4, ctypes.sizeof(RpMemberStats), RP_MAX_MEMBERS),
    MapSpec("group_stats", MAP_TYPE_PERCPU_ARRAY, 4, ctypes.sizeof(RpGroupStats), 1),
    MapSpec("flows", MAP_TYPE_ARRAY, 4, ctypes.sizeof(RpFlowSet), SIZED_AT_CREATION),
    MapSpec("throttle", MAP_TYPE_ARRAY, 4, ctypes.sizeof(RpThrottle), 1),
)
MAP_SPECS = {spec.name: spec for spec in GROUP_MAPS}

# The program every group shares (store/shared_program.py) reads each map
# of these names of a group through an array of such maps, indexed by the
# group's slot; "members" is read by user space only.
SHARED_MAPS = tuple(spec.name for spec in GROUP_MAPS if spec.name != "members")
# Flow tables of the default size are in the array of "flows" (elements of
# one size: the verifier inlines their lookups, in a group's program and the
# shared one); tables of any other size in the array of SIZED_FLOWS (made
# with BPF_F_INNER_MAP, whose lookups are calls).  docs/decisions/0017.
FLOW_SETS_DEFAULT = RP_FLOW_TABLE_DEFAULT // RP_FLOW_WAYS
SIZED_FLOWS = "sized_flows"
# Slots of the shared program: groups on one host, all namespaces together.
SHARED_SLOTS = 4096
# Where a group's program hands a selection to the shared program (RP_FD_HANDOFF),
# and the program array it tail-calls through (RP_FD_PROGS: the shared program at 0).
HANDOFF_SPEC = MapSpec("handoff", MAP_TYPE_PERCPU_ARRAY, 4, ctypes.sizeof(RpHandoff), 1)
PROGS_SPEC = MapSpec("progs", MAP_TYPE_PROG_ARRAY, 4, 4, 1)
# User space only: the entry program id of the group at each slot, 0 when free.
OWNERS_SPEC = MapSpec("owners", MAP_TYPE_ARRAY, 4, 4, SHARED_SLOTS)
