"""A member's state on screen: its symbol, its style and its place in a list.  Pure: no I/O and
no rich (a style is a name), so that a `--json` command or the exporter does not import it.

The word itself is the state's value (JSON, metric labels and screens agree on it); how a
screen draws it is here, in one table, so that no screen lacks a state the read model has.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from dataclasses import dataclass

from rpctl.controller.read.views import MemberState, MemberView


@dataclass(frozen=True)
class StateLook:
    symbol: str  # one terminal cell, before the word on the dashboard
    style: str   # a rich style name


# Every state's look, in the order screens list states.
STATE_LOOK = {
    MemberState.ACTIVE: StateLook("●", "green"),
    MemberState.THROTTLED: StateLook("◕", "magenta"),  # live, held back: most of a full circle
    MemberState.DRAINING: StateLook("◐", "yellow"),
    MemberState.DRAINED: StateLook("○", "cyan"),
    MemberState.GONE: StateLook("✖", "red"),
}
STATE_ORDER = tuple(STATE_LOOK)
STATE_SYMBOL = {state: look.symbol for state, look in STATE_LOOK.items()}
STATE_STYLE = {state: look.style for state, look in STATE_LOOK.items()}


def state_counts(members: Iterable[MemberView]) -> str:
    """"3 active, 1 throttled": how many members are in each state, in STATE_ORDER ("" for none)."""
    counts = collections.Counter(m.state for m in members)
    return ", ".join(f"{counts[s]} {s}" for s in STATE_ORDER if counts[s])
