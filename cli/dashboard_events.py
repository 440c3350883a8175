"""The dashboard's events: what changed between two reads of the groups.  Pure: no I/O here.

Events are derived from what changed between two snapshots, never from a
log, so they show what any writer (another operator, a script, a member
dying, serve throttling) did.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Optional

from rpctl.controller.read.views import GroupView, MemberState

from .states import STATE_STYLE
from .text import mode_text, opt


class EventKind(str, enum.Enum):
    """What an event is about.  A str, so that a kind compares with its value; the event's
    text is what a screen shows, never the kind."""

    REGISTERED = "registered"
    UNREGISTERED = "unregistered"
    DRAIN = "drain"
    DRAINED = "drained"
    UNDRAIN = "undrain"
    THROTTLED = "throttled"
    RELEASED = "released"
    GONE = "gone"
    WEIGHTS = "weights"
    MODE = "mode"
    GROUP_ADDED = "group+"
    GROUP_REMOVED = "group-"


# Every kind's rich style; a member entering a state is drawn in that state's style.
EVENT_STYLE = {
    EventKind.REGISTERED: "green",
    EventKind.UNREGISTERED: "magenta",
    EventKind.DRAIN: STATE_STYLE[MemberState.DRAINING],
    EventKind.DRAINED: STATE_STYLE[MemberState.DRAINED],
    EventKind.UNDRAIN: "green",
    EventKind.THROTTLED: STATE_STYLE[MemberState.THROTTLED],
    EventKind.RELEASED: "green",
    EventKind.GONE: STATE_STYLE[MemberState.GONE],
    EventKind.WEIGHTS: "blue",
    EventKind.MODE: "bold blue",
    EventKind.GROUP_ADDED: "bold green",
    EventKind.GROUP_REMOVED: "bold red",
}


@dataclass
class Event:
    time: float  # monotonic, as Snapshot.time
    wall: Optional[float]
    group: str
    kind: EventKind
    text: str
    member: Optional[str] = None


def diff(prev: list[GroupView], cur: list[GroupView], time: float, wall: Optional[float]) -> list[Event]:
    """What changed from the groups of one read (`prev`) to those of the next (`cur`), as
    events stamped with the later read's `time` and `wall`."""
    out: list[Event] = []

    def ev(group: str, kind: EventKind, text: str, member: Optional[str] = None) -> None:
        out.append(Event(time, wall, group, kind, text, member))

    before = {g.ref: g for g in prev}
    after = {g.ref: g for g in cur}
    for name in before:
        if name not in after:
            ev(name, EventKind.GROUP_REMOVED, f"group {name} removed")
    for name, g in after.items():
        old = before.get(name)
        if old is None:
            ev(name, EventKind.GROUP_ADDED, f"group {name} appeared ({g.endpoint}, {len(g.members)} members)")
            continue
        # Not the sampling age itself: it changes every refresh while no serve samples.
        if (old.mode, old.pin_dev, old.adaptive, old.adaptive_unsampled) != (
                g.mode, g.pin_dev, g.adaptive, g.adaptive_unsampled):
            ev(name, EventKind.MODE, f"mode {mode_text(old)} -> {mode_text(g)}")
        was = {m.name: m for m in old.members}
        now = {m.name: m for m in g.members}
        for mname in was:
            if mname not in now:
                ev(name, EventKind.UNREGISTERED, f"{mname} unregistered", mname)
        weights = []
        for mname, m in now.items():
            p = was.get(mname)
            if p is None:
                ev(name, EventKind.REGISTERED, f"{mname} registered (weight {m.weight})", mname)
                continue
            if p.cookie != m.cookie:
                ev(name, EventKind.REGISTERED, f"{mname} registered again (socket replaced)", mname)
            if m.gone and not p.gone:
                ev(name, EventKind.GONE, f"{mname} gone (its socket closed)", mname)
            if not m.gone:
                if m.draining and not p.draining:
                    ev(name, EventKind.DRAIN, f"{mname} drain started (queue {opt(m.queue)})", mname)
                if p.draining and not m.draining:
                    ev(name, EventKind.UNDRAIN, f"{mname} undrained (weight {m.weight})", mname)
                if m.state == MemberState.DRAINED and p.state != MemberState.DRAINED:
                    why = "queue empty" if m.flows is None else "queue empty, no live flow"
                    ev(name, EventKind.DRAINED, f"{mname} drained ({why})", mname)
                if m.throttled is not None and p.throttled is None:
                    ev(name, EventKind.THROTTLED, f"{mname} throttled ({m.throttled})", mname)
                if p.throttled is not None and m.throttled is None:
                    ev(name, EventKind.RELEASED, f"{mname} released (queue {opt(m.queue)})", mname)
            if p.weight != m.weight:
                weights.append(f"{mname} {p.weight}->{m.weight}")
        if weights:
            ev(name, EventKind.WEIGHTS, "weights changed: " + ", ".join(weights))
    return out
