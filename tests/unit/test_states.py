"""cli/states.py: every member state has a symbol, a style and a place in lists."""

from __future__ import annotations

from rich.cells import cell_len
from rpctl.cli.states import STATE_LOOK, STATE_ORDER, STATE_STYLE, STATE_SYMBOL, state_counts
from rpctl.controller.read.views import MemberState

from tests.support.views import group_view, member


def test_every_state_has_a_look():
    missing = [state for state in MemberState if state not in STATE_LOOK]
    assert not missing, f"states with no symbol, style or place: {missing}"
    assert sorted(STATE_ORDER) == sorted(MemberState) and len(STATE_ORDER) == len(MemberState)
    assert STATE_SYMBOL.keys() == STATE_STYLE.keys() == set(MemberState)


def test_each_symbol_is_one_cell_and_says_one_state():
    symbols = [look.symbol for look in STATE_LOOK.values()]
    assert all(cell_len(s) == 1 for s in symbols), symbols
    assert len(set(symbols)) == len(symbols)
    assert all(look.style for look in STATE_LOOK.values())


def test_state_counts_in_order_and_only_the_states_members_are_in():
    assert state_counts(group_view().members) == "1 active, 1 draining, 1 drained, 1 gone"
    members = [member(0, "a", gone=True), member(1, "b", throttled="queue 9, others <= 1"), member(2, "c"),
               member(3, "d", throttled="queue 8, others <= 1")]
    assert state_counts(members) == "1 active, 2 throttled, 1 gone"
    assert state_counts([]) == ""
