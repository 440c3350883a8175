"""Which groups need a look, most urgent first: how the dashboard orders many hosts' groups and
counts the ones it has no room for.  Pure: no I/O here."""

from __future__ import annotations

from rpctl.controller.read.views import GroupView, MemberState

# A share further than this from its target needs a look (RpctlShareOffTarget's threshold).
OFF_TARGET = 0.1


def look_score(g: GroupView) -> tuple[bool, bool, int, int, float]:
    """Why a group needs a look, compared most urgent first: its exporter is down, no active
    member, members gone, unmanaged listeners, the share furthest off its target (an active
    member's)."""
    off = max((abs(m.observed_share - m.target_share) for m in g.members
               if m.observed_share is not None and m.state == MemberState.ACTIVE), default=0.0)
    return (g.unreachable, not any(m.state == MemberState.ACTIVE for m in g.members),
            sum(m.gone for m in g.members), len(g.unmanaged or []), off)


def needs_a_look(g: GroupView) -> bool:
    unreachable, no_active, gone, unmanaged, off = look_score(g)
    return unreachable or no_active or gone > 0 or unmanaged > 0 or off > OFF_TARGET


def by_urgency(groups: list[GroupView]) -> list[GroupView]:
    """The groups that most need a look first; the others keep their order."""
    return sorted(groups, key=look_score, reverse=True)
