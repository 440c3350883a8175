"""The audit trail: each change of steering the store makes, worded old -> new, in the system log.

One line per change, written where the change is made, once per kind:

- a generation published (generation.Group.publish: every register,
  unregister, weight, drain, undrain, pin, reconcile of apply and serve,
  restart and rollout goes through it): members that joined or left, a
  member's new socket, weights and drain states old -> new, the pin mode
  old -> new, and "created" for a group's first generation;
- adaptive steering switched on or off, and members throttled or released
  by serve (steering.set_adaptive, steering.put_throttle);
- a group unloaded (lifecycle.unload);
- the state of a dead network namespace removed (stale_state.remove_stale).

Who made it (uid, user, pid, the command line or "serve") is
kernel/system_log.py's part, as is the socket.  A publish that changes
nothing an operator can see (the same weights again) logs nothing.  Reads
never come here.
"""

from __future__ import annotations

import time
from typing import Callable, Mapping, Optional, Sequence

from ..contract import abi
from ..kernel import system_log
from ..kernel.sockets import EndpointKey
from ..tables import pin_table
from ..tables.adaptive import Reason
from .policy import draining_flag

__all__ = ["generation_change", "namespace_removed", "published", "record", "throttle_change", "throttled",
           "unloaded"]


def record(group: str, change: str, netns: str = "") -> None:
    """Log one change of `group` (nothing when `change` is empty)."""
    if change:
        system_log.send(system_log.line(group, change, netns))


def _name(m: abi.RpMember) -> str:
    return m.name.decode(errors="replace")


def _state(pol: abi.RpPolicy) -> str:
    return "draining" if draining_flag(pol) else "active"


def _pin_text(gen: Optional[abi.RpGen], members: Sequence[abi.RpMember]) -> str:
    """A generation's pin mode as `rpctl pin` names it, with who serves which CPUs or queues
    (NAME=LIST, as `rpctl pin cpu --map` takes them)."""
    if gen is None or gen.mode == abi.RP_MODE_WEIGHTED:
        return "weighted"
    mode = pin_table.mode_name(gen.mode)
    if gen.mode == abi.RP_MODE_RSS:
        mode += ":" + gen.pin_dev.decode(errors="replace")
    pins = sorted(pin_table.pins_by_member(gen).items(), key=lambda item: min(item[1]))
    return f"{mode} ({' '.join(f'{_name(members[i])}={pin_table.format_cpus(keys)}' for i, keys in pins)})"


def generation_change(
    members: Sequence[abi.RpMember],
    active: int,
    final: Mapping[int, Optional[abi.RpPolicy]],
    before: Optional[abi.RpGen],
    after: abi.RpGen,
    endpoint: str = "",
) -> str:
    """What a publish changed, old -> new, "" when nothing an operator sees
    did (pure).  `members`: the entries published (policy[active] is each
    one's live policy before); `final`: index -> policy after (None: it
    left); `before`/`after`: the live generation and the one published."""
    parts = []
    if before is None or not before.published_ns:
        parts.append(f"created ({endpoint})" if endpoint else "created")
    for idx in sorted(final):
        m, new = members[idx], final[idx]
        old = m.policy[active] if m.policy[active].flags & abi.RP_POLICY_PRESENT else None
        where = f"pid {m.pid} fd {m.fd}"
        if old is None and new is not None:
            parts.append(f"+ {_name(m)} ({where}, weight {new.weight}, {_state(new)})")
        elif old is not None and new is None:
            parts.append(f"- {_name(m)}")
        elif old is not None and new is not None:
            if before is not None and before.incarnation[idx] != after.incarnation[idx]:
                parts.append(f"{_name(m)} new socket ({where})")
            if old.weight != new.weight:
                parts.append(f"{_name(m)} weight {old.weight} -> {new.weight}")
            if _state(old) != _state(new):
                parts.append(f"{_name(m)} {_state(old)} -> {_state(new)}")
    pin_before, pin_after = _pin_text(before, members), _pin_text(after, members)
    if pin_before != pin_after:
        parts.append(f"pin {pin_before} -> {pin_after}")
    return "; ".join(parts)


def published(
    group: str,
    netns: str,
    members: Sequence[abi.RpMember],
    active: int,
    final: Mapping[int, Optional[abi.RpPolicy]],
    before: Optional[abi.RpGen],
    after: abi.RpGen,
    endpoint: Callable[[], EndpointKey],
) -> None:
    """Log what a publish of `group` changed (generation_change); `endpoint`
    is asked only for a group's first generation."""
    first = before is None or not before.published_ns
    record(group, generation_change(members, active, final, before, after, endpoint().text if first else ""), netns)


def throttle_change(names: Mapping[int, str], before: set[int], after: Mapping[int, Reason]) -> str:
    """Members serve throttled or released, with why (pure); "" when the same are throttled."""
    parts = [f"{names.get(i, f'index {i}')} throttled ({why})" for i, why in sorted(after.items()) if i not in before]
    parts += [f"{names.get(i, f'index {i}')} released" for i in sorted(before) if i not in after]
    return "; ".join(parts)


def throttled(group: str, netns: str, previous: Optional[abi.RpThrottle], now: Mapping[int, Reason],
              members: Callable[[], Sequence[abi.RpMember]]) -> None:
    """Log who serve throttles or releases, against the throttle map before
    (`previous`; members whose lease ran out count as released already);
    `members` is read only when something changed."""
    before: set[int] = set()
    if previous is not None and previous.lease_ns > time.monotonic_ns():
        before = {i for i in range(abi.RP_MAX_MEMBERS) if previous.bits[i // 64] >> (i % 64) & 1}
    if before == set(now):
        return
    names = {i: _name(m) for i, m in enumerate(members()) if m.flags & abi.RP_MEMBER_USED}
    record(group, throttle_change(names, before, now), netns)


def unloaded(group: str, detached: bool, netns: str) -> None:
    """Log a group unloaded: its program detached, or (forced) its state removed with the program left on."""
    record(group, "unloaded: program detached, the sockets are back on the kernel's own selection" if detached
           else "unloaded: state removed; no member socket was reachable to detach the program", netns)


def namespace_removed(netns: str, groups: Sequence[str]) -> None:
    """Log the state folder of a dead network namespace removed, with its groups."""
    record(",".join(groups), f"removed the state of dead network namespace {netns}", netns)
