"""Steering writes: members' weights and drain flags, adaptive steering and its throttle.

Weights and drain flags are member policies, published as one generation
(Group.publish) under the group's lock; is_draining() reads the flag back
for orchestration (the launcher), so that no caller reads policy bits
itself.  Adaptive steering is a flag of ctl and the map "throttle", which
only `rpctl serve` writes.
"""

from __future__ import annotations

from typing import Mapping, Optional

from ..contract import abi
from ..contract.errors import InvalidInput, NotFound
from ..contract.refs import Param
from ..tables.adaptive import Reason
from . import audit
from .generation import Group
from .lookup import resolve_group, writing
from .policy import check_weight, draining_flag
from .state import Layout


def set_weights(weights: Mapping[str, int], group: Optional[str] = None, layout: Optional[Layout] = None) -> str:
    """Set the weights of the members named; others keep theirs.  All or nothing."""
    if not weights:
        raise InvalidInput("set weights: no NAME=WEIGHT given")
    for name, w in weights.items():
        check_weight(name, w)
    with writing(group, layout) as g:
        members = g.members()
        policies = g.live_policies(members)
        by_name = g.member_index(members)
        unknown = [n for n in weights if n not in by_name]
        if unknown:
            raise NotFound(f"set weights: no member {unknown[0]!r} in group {g.name!r}")
        for name, w in weights.items():
            policies[by_name[name]].weight = w
        if all(pol.weight == 0 for pol in policies.values()):
            raise InvalidInput("set weights: every weight would be zero; drain members instead")
        g.publish(policies, members)
        return g.name


def set_draining(name: str, draining: bool, force: bool = False, group: Optional[str] = None,
                 layout: Optional[Layout] = None) -> str:
    with writing(group, layout) as g:
        members = g.members()
        policies = g.live_policies(members)
        idx = g.find(members, name)
        if draining:
            policies[idx].flags |= abi.RP_POLICY_DRAINING
            if not force and not g.live_weights(members, policies):
                raise InvalidInput(
                    f"drain {name}: it is the last live member of group {g.name!r}; new connections would go "
                    "to the kernel's own selection (use ", Param("force", flag=True), ")",
                )
        else:
            policies[idx].flags &= ~abi.RP_POLICY_DRAINING
        g.publish(policies, members)
        return g.name


def is_draining(name: str, group: Optional[str] = None, layout: Optional[Layout] = None) -> bool:
    """Whether member `name` is draining in the live generation (NotFound
    when the group or the member is not there).  Reads without the lock."""
    layout = layout or Layout()
    with Group.open(resolve_group(group, layout), layout) as g:
        members = g.members()
        return draining_flag(g.live_policies(members)[g.find(members, name)])


def set_adaptive(g: Group, on: bool) -> bool:
    """Set or clear ctl's RP_CTL_ADAPTIVE (the program reads the map "throttle"
    only while it is set), under the group's lock: a publish rewrites ctl too.
    True when it changed.  Looked at without the lock first: serve asks every
    second, and must not wait behind a writer for a flag that is set already."""
    if bool(g.ctl().flags & abi.RP_CTL_ADAPTIVE) == on:
        return False
    with g.layout.group_lock(g.name):
        ctl = g.ctl()
        flags = ctl.flags | abi.RP_CTL_ADAPTIVE if on else ctl.flags & ~abi.RP_CTL_ADAPTIVE
        if flags == ctl.flags:
            return False
        ctl.flags = flags
        g.maps["ctl"].put(0, ctl)
        audit.record(g.name, "adaptive off -> on" if on else "adaptive on -> off", g.layout.netns)
        return True


def put_throttle(g: Group, throttled: Mapping[int, Reason], lease_until_ns: int, sampled_ns: int = 0) -> None:
    """Publish who is throttled until when (CLOCK_MONOTONIC), with why, and
    when serve sampled (0: nobody samples), in one map update.  Only `rpctl
    serve` writes it, so it takes no lock; a reader mid-update sees the old or
    the new bits of a word, each a valid throttle."""
    t = abi.RpThrottle(lease_ns=lease_until_ns if throttled else 0, sampled_ns=sampled_ns)
    for index, why in throttled.items():
        t.bits[index // 64] |= 1 << (index % 64)
        t.queue[index] = min(why.queue, 0xFFFFFFFF)
        t.others[index] = min(why.others, 0xFFFFFFFF)
    previous = g.maps["throttle"].get(0, abi.RpThrottle)
    g.maps["throttle"].put(0, t)
    audit.throttled(g.name, g.layout.netns, previous, throttled, g.members)
