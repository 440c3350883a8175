"""The generations step of a reconcile plan: each member's generation, and the weights and drains they give (pure).

reconcile.plan() calls steer() for a group whose file says `generations`
(docs/decisions/0021) with every member that stays or joins, and those
that leave.  steer():
- numbers the members that have no generation yet (tables/server_generations.assign:
  a listener of the same server as a member joins that member's generation);
- rolls a canary back when one of its members left (its process died, or
  closed the listener): the previous generation takes all new work again;
- applies `verdict` (rpctl promote, rpctl rollback) to the newest generation;
- gives each generation its role, and each member the weight and drain
  flag of its role: a draining generation's members drain (their queued
  connections are served, their UDP flows and QUIC connections stay), a
  canary's members share `percent` of the weight with the serving ones;
- says in one line per generation whose role changed what it does now.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

from ..contract.errors import InvalidInput
from ..store.membership import Mark
from ..tables.server_generations import Role, Rollout, Verdict, assign, canary_weights, roles

__all__ = ["Seatholder", "Steered", "check_verdict", "steer"]


@dataclass(frozen=True)
class Seatholder:
    """A member (or a listener joining) as the generations step sees it."""

    name: str
    key: Optional[str]   # its server's generation key (kernel/server_root.py); None: not told
    mark: Mark           # what its entry keeps (NO_MARK for one joining)
    weight: int          # what the file gives it
    draining: bool       # the file drains it


@dataclass(frozen=True)
class Steered:
    """What the generations step makes of the members: name -> (weight, draining, mark), and log lines."""

    members: dict[str, tuple[int, bool, Mark]]
    lines: tuple[str, ...] = ()


def _verdicts(marks: Sequence[Mark]) -> dict[int, Verdict]:
    out: dict[int, Verdict] = {}
    for m in marks:
        if m.server_gen and out.get(m.server_gen, Verdict.NONE) is Verdict.NONE:
            out[m.server_gen] = m.verdict
    return out


def _role_text(role: Role, rollout: Rollout) -> str:
    if role is Role.CANARY:
        return f"canary, {rollout.canary:g} % of new work"
    return "takes new work" if role is Role.SERVING else "draining (takes no new work)"


def check_verdict(group: str, verdict: Verdict, before: Mapping[int, Role], verdicts: Mapping[int, Verdict]) -> None:
    """InvalidInput unless `verdict` can be given to the newest generation: a
    promote needs a canary, a rollback a generation to go back to."""
    word = "promote" if verdict is Verdict.PROMOTED else "roll back"
    if not verdicts:
        raise InvalidInput(f"{word} group {group}: it has no generation yet (no member)")
    newest = max(verdicts)
    if verdicts[newest] is Verdict.ROLLED_BACK:
        raise InvalidInput(f"{word} group {group}: generation {newest} is rolled back already")
    if verdict is Verdict.PROMOTED and before.get(newest) is not Role.CANARY:
        raise InvalidInput(f"promote group {group}: generation {newest} is no canary "
                           f"({'it takes all new work already' if before.get(newest) is Role.SERVING else 'nothing to promote'})")
    if verdict is Verdict.ROLLED_BACK and len(verdicts) == 1:
        raise InvalidInput(f"roll back group {group}: generation {newest} is its only one: nothing to go back to")


def steer(group: str, rollout: Rollout, members: Sequence[Seatholder], leaving: Sequence[Mark] = (),
          verdict: Optional[Verdict] = None) -> Steered:
    """The weights, drains and marks of `members` under `rollout` (see the module's docstring)."""
    known = [(h.key, h.mark.server_gen) for h in members if h.mark.server_gen]
    fresh = [h for h in members if not h.mark.server_gen]
    numbers = dict(zip((h.name for h in fresh), assign(known, [h.key for h in fresh])))
    marks = {h.name: Mark(numbers.get(h.name, h.mark.server_gen), *h.mark[1:]) for h in members}
    before = roles(_verdicts([h.mark for h in members if h.mark.server_gen] + list(leaving)), rollout)
    verdicts = _verdicts(list(marks.values()))
    failed = sorted({m.server_gen for m in leaving if before.get(m.server_gen) is Role.CANARY})
    for gen in failed:
        if gen in verdicts:
            verdicts[gen] = Verdict.ROLLED_BACK
    if verdict is not None:
        check_verdict(group, verdict, before, verdicts)
        verdicts[max(verdicts)] = verdict
    after = roles(verdicts, rollout)
    serving = [g for g, r in after.items() if r is Role.SERVING]
    back = f"generation {serving[0]} takes all new work again" if serving else "no generation is left to take it"
    lines = [f"group {group}: generation {gen} (canary) lost a member: rolled back, {back}" for gen in failed]
    for gen in sorted(after):
        if before.get(gen) != after[gen]:
            lines.append(f"group {group}: generation {gen}: {_role_text(after[gen], rollout)}")
    for gen in sorted(set(before) - set(after)):
        lines.append(f"group {group}: generation {gen}: no member left")

    out: dict[str, tuple[int, bool, Mark]] = {}
    for h in members:
        gen = marks[h.name].server_gen
        role = after[gen]
        mark = Mark(gen, verdicts[gen], role is Role.CANARY)
        out[h.name] = (h.weight, h.draining or role is Role.DRAINING, mark)
    if Role.CANARY in after.values():
        def side(role: Role) -> dict[int, int]:
            return {i: out[h.name][0] for i, h in enumerate(members)
                    if after[marks[h.name].server_gen] is role and not out[h.name][1]}

        for i, w in canary_weights(side(Role.SERVING), side(Role.CANARY), rollout.canary).items():
            name = members[i].name
            out[name] = (w, *out[name][1:])
    return Steered(out, tuple(lines))
