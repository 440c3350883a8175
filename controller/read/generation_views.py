"""A group's server generations as readers show them: state, share of new work, members.

Built from the members' views (controller/read/views.py) and what each
member entry keeps of its generation (number, verdict, canary: written by
reconcile, docs/decisions/0021), so status, the dashboard and the metrics
need not know the file that chose the roles.  A generation whose members
all take no new work is draining until none of them has anything left
(queued connections, live flows: what `rpctl drain --wait` waits for), then
drained: safe to stop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional, Protocol

from ..tables.server_generations import Role, State, Verdict, state_of

__all__ = ["GenerationView", "generation_views", "verdict_text"]


class _Member(Protocol):
    name: str
    generation: int
    canary: bool
    verdict: Optional[str]
    draining: bool
    gone: bool
    target_share: float

    @property
    def state(self) -> str: ...


@dataclass(frozen=True)
class GenerationView:
    number: int
    state: State
    share: float                 # of new work: its members' target shares
    members: tuple[str, ...]
    verdict: Optional[str] = None  # "promoted", "rolled back"; None before any

    @property
    def as_json(self) -> dict:
        return {"generation": self.number, "state": str(self.state), "share": self.share,
                "members": list(self.members), "verdict": self.verdict}


def generation_views(members: Iterable[_Member]) -> list[GenerationView]:
    """One view per generation the members have (those of generation 0, not known, are left out), oldest first."""
    by_number: dict[int, list[_Member]] = {}
    for m in members:
        if m.generation:
            by_number.setdefault(m.generation, []).append(m)
    out = []
    for number, ms in sorted(by_number.items()):
        taking = [m for m in ms if not m.draining and not m.gone]
        role = (Role.CANARY if any(m.canary for m in taking) else Role.SERVING) if taking else Role.DRAINING
        left = any(m.state == "draining" for m in ms)
        verdict = next((m.verdict for m in ms if m.verdict), None)
        out.append(GenerationView(number, state_of(role, left), sum(m.target_share for m in ms),
                                  tuple(m.name for m in ms), verdict))
    return out


def verdict_text(v: Verdict) -> Optional[str]:
    """How readers write a verdict: None before any."""
    return None if v is Verdict.NONE else v.value
