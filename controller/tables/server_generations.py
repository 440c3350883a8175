"""Server generations of a group: numbers, roles and canary weights (pure).

A generation is one start of the server behind a group's listeners
(docs/decisions/0021): a reload or graceful restart of one server keeps its
generation; a second instance started beside the first is a new one.  Who
"one server" is comes from a key that the kernel layer reads for each
listener (controller/kernel/server_root.py: its process group's leader, or
its cgroup); here the keys are only compared.

    assign(known, newcomers)          numbers for listeners: 1, 2, ... per group in order of appearance
    roles(verdicts, rollout)          what each generation does with new work: serve, canary, drain
    canary_weights(...)               the weights that give the canary its percent of new work
    state_of(role, left)              the state a reader shows: serving, canary, draining, drained

A member entry keeps its generation's number; the operator's verdict on a
canary (promoted, rolled back) is kept in the entries of that generation's
members.  A number is used again only when no member of it is left.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional, Sequence

__all__ = [
    "NEWEST",
    "Role",
    "Rollout",
    "State",
    "Verdict",
    "assign",
    "canary_weights",
    "roles",
    "state_of",
]

WEIGHT_BUDGET = 10000  # what the canary's and the others' weights are scaled to (MAX_WEIGHT: one member may hold it)


class Verdict(enum.Enum):
    """The operator's word on a generation: none yet, `rpctl promote`, `rpctl rollback`
    (or serve's own rollback of a canary whose members died)."""

    NONE = "none"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled back"


class Role(str, enum.Enum):
    """What a generation does with new work."""

    SERVING = "serving"    # takes new work at its members' weights
    CANARY = "canary"      # takes the rollout's percent of new work
    DRAINING = "draining"  # takes no new work; what it has is served

    def __str__(self) -> str:
        return self.value


class State(str, enum.Enum):
    """A generation as readers show it: its role, with draining split by whether anything is left."""

    SERVING = "serving"
    CANARY = "canary"
    DRAINING = "draining"
    DRAINED = "drained"    # draining, and nothing of it is left: safe to stop

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


@dataclass(frozen=True)
class Rollout:
    """How a group's generations share new work (the file's `generations`):
    canary None is "newest" (the newest takes all at once), a percent is a
    canary that takes that share until promoted or rolled back."""

    canary: Optional[float] = None

    @property
    def text(self) -> str:
        return "newest" if self.canary is None else f"canary {self.canary:g} %"


NEWEST = Rollout()


def assign(known: Iterable[tuple[Optional[str], int]], newcomers: Sequence[Optional[str]]) -> list[int]:
    """The generation of each newcomer (a listener with the key given; None:
    its server could not be told), given `known` (key, generation) pairs of
    the members that have one: the generation of a member with the same key,
    else a new number (one more than the highest there is; newcomers of one
    key share theirs)."""
    by_key: dict[str, int] = {}
    highest = 0
    for key, gen in known:
        highest = max(highest, gen)
        if key is not None and gen:
            by_key.setdefault(key, gen)
    out = []
    for key in newcomers:
        gen = by_key.get(key) if key is not None else None
        if gen is None:
            highest += 1
            gen = highest
            if key is not None:
                by_key[key] = gen
        out.append(gen)
    return out


def roles(verdicts: Mapping[int, Verdict], rollout: Rollout) -> dict[int, Role]:
    """The role of each generation present (number -> its verdict).

    A generation rolled back drains.  Of the others, the newest is the one
    new work goes to: with "newest" it serves and every older one drains;
    with a canary, unless it is promoted, the only one, or older than one
    rolled back (after a rollback the previous generation takes all new
    work again), it is the canary and the newest older one not rolled back
    serves beside it (the rest drain).  When every generation is rolled
    back, the newest of them serves (nothing else could)."""
    if not verdicts:
        return {}
    standing = sorted((g for g, v in verdicts.items() if v is not Verdict.ROLLED_BACK), reverse=True)
    if not standing:
        standing = [max(verdicts)]
    out = {g: Role.DRAINING for g in verdicts}
    newest = standing[0]
    out[newest] = Role.SERVING
    if rollout.canary is not None and verdicts[newest] is Verdict.NONE and newest == max(verdicts) \
            and len(standing) > 1:
        out[newest] = Role.CANARY
        out[standing[1]] = Role.SERVING
    return out


def canary_weights(serving: Mapping[int, int], canary: Mapping[int, int], percent: float) -> dict[int, int]:
    """Weights (member index -> weight) that give the canary's members
    `percent` of the new work and the serving ones the rest, each side in
    proportion to its own weights: both scaled to WEIGHT_BUDGET, every
    member of weight > 0 keeping at least 1.  A side whose weights are all
    0 gets nothing and the other all (as the plain weights would give)."""
    c_sum, s_sum = sum(canary.values()), sum(serving.values())
    if not c_sum or not s_sum:
        return {**serving, **canary}
    out = {}
    for side, total, share in ((serving, s_sum, 1 - percent / 100), (canary, c_sum, percent / 100)):
        for index, w in side.items():
            out[index] = max(1, round(w * share * WEIGHT_BUDGET / total)) if w else 0
    return out


def state_of(role: Role, left: bool) -> State:
    """The state shown for a generation of `role`; `left`: whether any of its
    members still has queued connections or live flows (drain's test)."""
    if role is Role.DRAINING:
        return State.DRAINING if left else State.DRAINED
    return State(role.value)
