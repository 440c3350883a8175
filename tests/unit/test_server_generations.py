"""controller/tables/server_generations.py: numbers, roles, canary weights and states (pure)."""

from __future__ import annotations

import pytest
from rpctl.controller.tables.server_generations import (
    NEWEST,
    WEIGHT_BUDGET,
    Role,
    Rollout,
    State,
    Verdict,
    assign,
    canary_weights,
    roles,
    state_of,
)

CANARY = Rollout(5)
N, P, R = Verdict.NONE, Verdict.PROMOTED, Verdict.ROLLED_BACK
SERVING, CANARY_ROLE, DRAINING = Role.SERVING, Role.CANARY, Role.DRAINING


def test_a_listener_of_a_known_server_joins_its_generation():
    assert assign([("master 10", 1), ("master 20", 2)], ["master 20", "master 10"]) == [2, 1]


def test_new_servers_are_numbered_in_order_of_appearance_and_share_a_number_per_key():
    assert assign([], ["a", "a", "b"]) == [1, 1, 2]
    assert assign([("a", 1)], ["b", "c", "b"]) == [2, 3, 2]


def test_a_number_follows_the_highest_there_is_and_an_unknown_key_is_its_own():
    assert assign([("a", 3)], [None, None]) == [4, 5]
    assert assign([(None, 2)], ["x"]) == [3]


def test_newest_gives_the_newest_all_and_drains_the_others():
    assert roles({1: N, 2: N, 3: N}, NEWEST) == {1: DRAINING, 2: DRAINING, 3: SERVING}
    assert roles({1: N}, NEWEST) == {1: SERVING}
    assert roles({}, NEWEST) == {}


def test_a_canary_serves_beside_the_newest_older_generation():
    assert roles({1: N, 2: N}, CANARY) == {1: SERVING, 2: CANARY_ROLE}
    assert roles({1: N, 2: P, 3: N}, CANARY) == {1: DRAINING, 2: SERVING, 3: CANARY_ROLE}
    assert roles({1: N}, CANARY) == {1: SERVING}


def test_promoted_takes_all_and_rolled_back_gives_it_back():
    assert roles({1: N, 2: P}, CANARY) == {1: DRAINING, 2: SERVING}
    assert roles({1: N, 2: R}, CANARY) == {1: SERVING, 2: DRAINING}
    # After a rollback the previous generation takes all, even a canary that was never promoted.
    assert roles({1: N, 2: N, 3: R}, CANARY) == {1: DRAINING, 2: SERVING, 3: DRAINING}
    # A rollback in "newest" works the same way.
    assert roles({1: N, 2: R}, NEWEST) == {1: SERVING, 2: DRAINING}


def test_when_every_generation_is_rolled_back_the_newest_serves():
    assert roles({1: R, 2: R}, CANARY) == {1: DRAINING, 2: SERVING}


@pytest.mark.parametrize("serving, canary, percent", [
    ({0: 1, 1: 1}, {2: 1, 3: 1}, 5),
    ({0: 3, 1: 1}, {2: 1}, 5),
    ({0: 1}, {1: 1, 2: 1, 3: 1}, 1),
    ({i: 1 for i in range(100)}, {100: 1}, 50),
])
def test_canary_weights_give_the_canary_its_percent(serving, canary, percent):
    w = canary_weights(serving, canary, percent)
    total = sum(w.values())
    assert total <= WEIGHT_BUDGET + len(w) and max(w.values()) <= WEIGHT_BUDGET
    assert sum(w[i] for i in canary) / total == pytest.approx(percent / 100, abs=0.002)
    # Each side keeps its own proportions.
    first = next(iter(serving))
    for i in serving:
        assert w[i] / w[first] == pytest.approx(serving[i] / serving[first], rel=0.01)


def test_canary_weights_keep_zero_and_give_all_when_a_side_has_none():
    assert canary_weights({0: 1, 1: 0}, {2: 1}, 5)[1] == 0
    assert canary_weights({0: 0}, {1: 2}, 5) == {0: 0, 1: 2}
    assert canary_weights({}, {1: 2}, 5) == {1: 2}
    assert min(canary_weights({i: 1 for i in range(200)}, {200: 1}, 1).values()) >= 1


def test_a_draining_generation_is_drained_once_nothing_is_left():
    assert state_of(DRAINING, left=True) is State.DRAINING
    assert state_of(DRAINING, left=False) is State.DRAINED
    assert state_of(SERVING, left=True) is State.SERVING
    assert state_of(CANARY_ROLE, left=False) is State.CANARY
    assert f"{State.DRAINED}" == "drained" and str(Role.CANARY) == "canary"


def test_a_rollout_says_what_it_is():
    assert NEWEST.text == "newest" and CANARY.text == "canary 5 %"
