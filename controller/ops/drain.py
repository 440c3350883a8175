"""Waiting for a draining member: its queue empty and, in a UDP group with
flow affinity, no live flow left on it; or its socket gone.

Draining itself is a write (group.set_draining); this module only reads,
through the read model, until the member has nothing left to serve.
"""

from __future__ import annotations

import time
from typing import Callable, Optional

from ..contract import abi
from ..contract.errors import InvalidInput, NotFound, WaitTimeout
from ..contract.refs import Call
from ..read.generation_views import GenerationView
from ..read.views import DRAINED, GONE, MemberView, read_group
from ..store.generation import Group
from ..store.lookup import resolve_group
from ..store.state import Layout

# progress(queued, in_handshake, flows): see wait_drained.
Progress = Callable[[int, Optional[int], Optional[int]], None]


def wait_drained(
    name: str,
    timeout: float,
    group: Optional[str] = None,
    layout: Optional[Layout] = None,
    progress: Optional[Progress] = None,
    interval: float = 0.1,
) -> MemberView:
    """Return when a draining member's queue is empty and it holds no live
    flow (state drained); WaitTimeout otherwise.

    progress(queued, in_handshake, flows) is called when any changes;
    in_handshake counts the whole port's TCP handshakes (sock_diag cannot
    tell whose they are; on a listener that closes the program places
    them), None for UDP; flows are the member's live UDP flows, None for a
    group without a flow table."""
    layout = layout or Layout()
    group = resolve_group(group, layout)
    deadline = time.monotonic() + timeout
    last = None
    with Group.open(group, layout) as g:
        tcp = g.ctl().proto == abi.RP_PROTO_TCP
        while True:
            view = read_group(g)
            member = view.member(name)
            if not member.draining:
                raise InvalidInput(
                    f"wait for {name}: it is not draining (run ", Call("set_draining", name, True), " first)"
                )
            if member.state in (DRAINED, GONE):
                return member
            if progress:
                # The port's handshakes: one more dump, only for someone who shows it.
                shaking = _handshakes(view.port) if tcp else None
                if (member.queue, shaking, member.flows) != last:
                    progress(member.queue or 0, shaking, member.flows)
                    last = (member.queue, shaking, member.flows)
            if time.monotonic() >= deadline:
                flows = f" and {member.flows} live flows" if member.flows else ""
                raise WaitTimeout(
                    f"drain {name}: still {member.queue} queued{flows} after {timeout:g}s; "
                    "it takes no new connection"
                )
            time.sleep(interval)


def wait_generation_drained(
    number: int,
    timeout: float,
    group: Optional[str] = None,
    layout: Optional[Layout] = None,
    progress: Optional[Callable[[int, Optional[int]], None]] = None,
    interval: float = 0.1,
) -> GenerationView:
    """Return when server generation `number` of the group is drained (every
    member of it draining, with an empty queue and no live flow, or gone:
    docs/decisions/0021); WaitTimeout otherwise.  `rpctl serve` drains
    generations (the file's `generations`); this only waits.
    progress(queued, flows) is called when either changes."""
    layout = layout or Layout()
    group = resolve_group(group, layout)
    deadline = time.monotonic() + timeout
    last = None
    with Group.open(group, layout) as g:
        while True:
            view = read_group(g)
            gen = next((x for x in view.generations if x.number == number), None)
            if gen is None:
                known = ", ".join(str(x.number) for x in view.generations) or "none"
                raise NotFound(f"wait for generation {number}: group {group!r} has no such generation "
                               f"(it has: {known})")
            if gen.state == "drained":
                return gen
            if gen.state != "draining":
                raise InvalidInput(f"wait for generation {number} of {group}: it is {gen.state}, not draining "
                                   "(a newer generation, rpctl promote or rpctl rollback drains it)")
            mine = [m for m in view.members if m.generation == number]
            queued = sum(m.queue or 0 for m in mine)
            flows = None if view.flow_table is None else sum(m.flows or 0 for m in mine)
            if progress and (queued, flows) != last:
                progress(queued, flows)
                last = (queued, flows)
            if time.monotonic() >= deadline:
                held = f" and {flows} live flows" if flows else ""
                raise WaitTimeout(f"generation {number} of {group}: still {queued} queued{held} after {timeout:g}s; "
                                  "it takes no new work")
            time.sleep(interval)


def _handshakes(port: int) -> Optional[int]:
    from ..kernel import diag

    try:
        return diag.handshakes(port)
    except OSError:
        return None  # progress only: the wait itself goes on
