"""Unit tests of the slot table policy: exact shares, minimal disruption, spreading."""

from __future__ import annotations

import random
from array import array
from fractions import Fraction

import pytest
from rpctl.controller.contract import abi
from rpctl.controller.tables import slot_table
from rpctl.controller.tables.slot_table import (
    DEFAULT_SLOTS,
    MAX_MEMBERS,
    NO_MEMBER,
    apportion,
    build_table,
    min_moved_fraction,
    moved_fraction,
    shares,
)

SLOTS = DEFAULT_SLOTS


def random_weights(rng: random.Random, n: int, zero_rate: float = 0.0) -> dict[int, int]:
    members = rng.sample(range(MAX_MEMBERS), n)
    return {m: 0 if rng.random() < zero_rate else rng.randint(1, 1000) for m in members}


def assert_exact(table, weights, slots=SLOTS):
    """Every member's share is its weight share to within one slot; nobody else holds a slot."""
    assert len(table) == slots
    total = sum(weights.values())
    got = shares(table)
    if not total:
        assert set(table) == {NO_MEMBER}
        return
    assert NO_MEMBER not in table
    assert set(got) <= {m for m, w in weights.items() if w > 0}
    for m, w in weights.items():
        assert abs(got.get(m, 0.0) - w / total) <= 1 / slots, m


def count_tvd(old_weights, new_weights, slots=SLOTS):
    """Slots that must change between the two apportionments (the integer minimum)."""
    old, new = apportion(old_weights, slots), apportion(new_weights, slots)
    return sum(max(0, c - new.get(m, 0)) for m, c in old.items())


def check_change(old_weights, new_weights, slots=SLOTS, previous=None):
    old = build_table(old_weights, previous, slots) if previous is None else previous
    new = build_table(new_weights, old, slots)
    assert_exact(new, new_weights, slots)
    moved = moved_fraction(old, new)
    assert moved <= 1.2 * min_moved_fraction(old_weights, new_weights) + 4 / slots
    if sum(old_weights.values()):
        assert round(moved * slots) == count_tvd(old_weights, new_weights, slots)
    return old, new


def runs(table):
    """Length of the longest run of one value."""
    longest = cur = 1
    for a, b in zip(table, table[1:]):
        cur = cur + 1 if a == b else 1
        longest = max(longest, cur)
    return longest


def chunk_counts(indices, slots=SLOTS, chunks=16):
    counts = [0] * chunks
    for i in indices:
        counts[i * chunks // slots] += 1
    return counts


# apportion ---------------------------------------------------------------


@pytest.mark.parametrize(
    "weights",
    [{0: 1, 1: 2, 2: 3, 3: 4}, {0: 1, 1: 99}, {5: 7}, {0: 1, 1: 1, 2: 1}, {m: m + 1 for m in range(256)}],
)
@pytest.mark.parametrize("slots", [2, 8, 1024, SLOTS])
def test_apportion_sums_and_is_within_one(weights, slots):
    counts = apportion(weights, slots)
    assert sum(counts.values()) == slots
    total = sum(weights.values())
    for m, w in weights.items():
        assert abs(counts[m] - Fraction(w * slots, total)) < 1


def test_apportion_random_within_one():
    rng = random.Random(7)
    for _ in range(50):
        weights = random_weights(rng, rng.randint(1, 256), zero_rate=0.2)
        counts = apportion(weights, SLOTS)
        total = sum(weights.values())
        if not total:
            assert counts == {}
            continue
        assert sum(counts.values()) == SLOTS
        for m, w in weights.items():
            assert abs(counts.get(m, 0) - Fraction(w * SLOTS, total)) < 1


def test_apportion_leaves_out_weight_zero():
    assert apportion({0: 0, 1: 3, 2: 1}, 4) == {1: 3, 2: 1}


@pytest.mark.parametrize("weights", [{}, {0: 0}, {0: 0, 200: 0}])
def test_apportion_all_zero_is_empty(weights):
    assert apportion(weights, SLOTS) == {}


def test_apportion_tie_break_larger_remainder_then_lower_member():
    # 4 slots over three equal weights: remainders tie, the lowest member gets the extra slot.
    assert apportion({2: 1, 0: 1, 1: 1}, 4) == {0: 2, 1: 1, 2: 1}
    # Exact shares 1.6, 1.2, 1.2 of 4: the largest remainder (member 9) wins over lower indices.
    assert apportion({1: 3, 2: 3, 9: 4}, 4) == {1: 1, 2: 1, 9: 2}


def test_apportion_more_members_than_slots():
    counts = apportion(dict.fromkeys(range(10), 1), 4)
    assert counts == {0: 1, 1: 1, 2: 1, 3: 1, **dict.fromkeys(range(4, 10), 0)}


# fresh tables --------------------------------------------------------------


def _random_256():
    rng = random.Random(42)
    return {m: rng.randint(1, 1000) for m in range(256)}


@pytest.mark.parametrize(
    "weights",
    [{0: 1, 1: 2, 2: 3, 3: 4}, {0: 5, 1: 5, 2: 5, 3: 5}, {0: 1, 1: 99}, {3: 1}, _random_256()],
    ids=["1:2:3:4", "even", "canary", "single", "256-random"],
)
def test_fresh_table_shares_are_exact(weights):
    table = build_table(weights)
    assert isinstance(table, array)
    assert table.typecode == "I"
    assert_exact(table, weights)


@pytest.mark.parametrize("weights", [{}, {0: 0, 1: 0}])
def test_all_zero_weights_give_no_member(weights):
    assert set(build_table(weights)) == {NO_MEMBER}
    previous = build_table({0: 1, 1: 1})
    assert set(build_table(weights, previous)) == {NO_MEMBER}
    assert shares(build_table(weights)) == {}


def test_fresh_table_is_interleaved():
    assert runs(build_table({0: 1, 1: 1, 2: 1, 3: 1})) <= 8
    assert runs(build_table({0: 1, 1: 2, 2: 3, 3: 4})) <= 8


def test_fresh_from_none_equals_fresh_from_empty_table():
    weights = {0: 1, 1: 2, 2: 3, 3: 4}
    assert build_table(weights) == build_table(weights, array("I", [NO_MEMBER]) * SLOTS)
    assert build_table(weights) == build_table(weights, [NO_MEMBER] * SLOTS)


def test_small_slots():
    table = build_table({0: 1, 1: 1}, slots=2)
    assert sorted(table) == [0, 1]
    assert_exact(build_table({0: 1, 1: 3}, table, slots=2), {0: 1, 1: 3}, slots=2)


# changes -------------------------------------------------------------------

BASE = {0: 10, 1: 10, 2: 10, 3: 10}


@pytest.mark.parametrize(
    "old, new",
    [
        (BASE, {**BASE, 2: 15}),  # single weight change up
        (BASE, {**BASE, 1: 3}),  # single weight change down
        (BASE, {**BASE, 3: 0}),  # drain
        ({**BASE, 3: 0}, BASE),  # undrain
        (BASE, {**BASE, 4: 10}),  # add a member
        (BASE, {0: 10, 1: 10, 3: 10}),  # remove a member
        ({0: 1, 1: 99}, {0: 5, 1: 95}),  # canary step
        ({0: 1, 1: 99}, {0: 0, 1: 99}),  # canary rollback
        (_random_256(), {**_random_256(), 17: 0}),  # drain one of 256
        (_random_256(), {**_random_256(), 17: 5000}),  # boost one of 256
        ({}, BASE),  # from nothing
        (BASE, {}),  # to nothing
    ],
)
def test_change_moves_minimum_and_stays_exact(old, new):
    check_change(old, new)


def test_random_changes_move_minimum():
    rng = random.Random(2024)
    for _ in range(50):
        n = rng.choice([2, 3, 4, 8, 16, 64, 256])
        old = random_weights(rng, n, zero_rate=0.1)
        new = dict(old)
        for m in rng.sample(sorted(old), rng.randint(1, n)):
            new[m] = rng.choice([0, rng.randint(1, 1000)])
        for m in rng.sample(range(MAX_MEMBERS), rng.randint(0, 3)):
            new.setdefault(m, rng.randint(1, 1000))
        for m in rng.sample(sorted(new), rng.randint(0, 2)):
            del new[m]
        check_change(old, new)


def test_chain_of_changes_stays_exact_and_minimal():
    rng = random.Random(99)
    weights = random_weights(rng, 16)
    table = build_table(weights)
    for _ in range(20):
        new = dict(weights)
        m = rng.choice(sorted(new))
        new[m] = rng.choice([0, 1, rng.randint(1, 1000)])
        _, table = check_change(weights, new, previous=table)
        weights = new


def test_previous_with_unknown_members_is_released():
    previous = array("I", [7, 0, 1, NO_MEMBER] * (SLOTS // 4))
    weights = {0: 1, 1: 1}
    table = build_table(weights, previous)
    assert_exact(table, weights)
    assert 7 not in table
    # Member 0 and 1 were at their quota (one half each after the release): they keep every slot.
    assert all(table[i] == previous[i] for i in range(SLOTS) if previous[i] in (0, 1))
    assert moved_fraction(previous, table) == 0.5


def test_no_change_moves_nothing():
    weights = {0: 1, 1: 2, 2: 3, 3: 4}
    table = build_table(weights)
    assert build_table(weights, table) == table
    assert build_table({m: 2 * w for m, w in weights.items()}, list(table)) == table


def test_deterministic():
    rng = random.Random(5)
    old, new = random_weights(rng, 32), random_weights(rng, 32)
    assert build_table(old) == build_table(old)
    assert build_table(new, build_table(old)) == build_table(new, build_table(old))


def test_previous_is_not_modified():
    previous = build_table(BASE)
    copy = array("I", previous)
    build_table({**BASE, 0: 0}, previous)
    assert previous == copy


def test_released_slots_are_spread():
    # Two equal members; member 0 halves its share and releases half its slots.
    old = build_table({0: 1, 1: 1})
    new = build_table({0: 1, 1: 3}, old)
    released = [i for i in range(SLOTS) if old[i] != new[i]]
    assert len(released) == SLOTS // 4
    mean = len(released) / 16
    # Releasing the first k slots of member 0 would put them all in the first 8 chunks.
    assert all(abs(c - mean) <= 0.05 * mean for c in chunk_counts(released))
    assert runs(new) <= 8


def test_new_member_slots_are_spread_and_interleaved():
    old = build_table({0: 1, 1: 1, 2: 1})
    new = build_table({0: 1, 1: 1, 2: 1, 3: 1}, old)
    gained = [i for i in range(SLOTS) if new[i] == 3]
    mean = len(gained) / 16
    assert all(abs(c - mean) <= 0.05 * mean for c in chunk_counts(gained))
    assert runs(new) <= 8


def test_drain_refill_is_interleaved():
    # The slots a drained member frees are shared among the others in turn, not in blocks.
    old = build_table(BASE)
    new = build_table({**BASE, 0: 0}, old)
    freed = [new[i] for i in range(SLOTS) if old[i] == 0]
    assert runs(freed) <= 3
    assert len(freed) == SLOTS // 4
    # Shared as evenly as slots allow: each within one slot of a third.
    assert all(abs(freed.count(m) - len(freed) / 3) < 1 for m in (1, 2, 3)), [freed.count(m) for m in (1, 2, 3)]


# shares / moved fractions ------------------------------------------------


def test_shares_excludes_no_member():
    assert shares([0, 0, 1, NO_MEMBER]) == {0: 0.5, 1: 0.25}
    assert shares([]) == {}


def test_moved_fraction():
    assert moved_fraction([0, 1, 2, 3], [0, 1, 3, 2]) == 0.5
    assert moved_fraction([], []) == 0.0
    with pytest.raises(ValueError, match="length"):
        moved_fraction([0, 1], [0])


@pytest.mark.parametrize(
    "old, new, expected",
    [
        ({0: 1, 1: 1}, {0: 0, 1: 1}, 0.5),
        ({0: 1, 1: 1}, {1: 1}, 0.5),
        ({0: 1, 1: 1}, {0: 2, 1: 2}, 0.0),
        ({0: 1, 1: 1}, {0: 1, 1: 3}, 0.25),
        ({0: 1}, {1: 1}, 1.0),
        ({0: 1, 1: 1}, {}, 1.0),
        ({}, {0: 1}, 1.0),
        ({0: 0}, {0: 1}, 1.0),
        ({}, {}, 0.0),
        ({0: 0}, {0: 0}, 0.0),
    ],
)
def test_min_moved_fraction(old, new, expected):
    assert min_moved_fraction(old, new) == pytest.approx(expected)


# validation ----------------------------------------------------------------


@pytest.mark.parametrize(
    "weights, match",
    [
        ({0: -1}, ">= 0"),
        ({0: 1.5}, "must be an int"),
        ({0: "1"}, "must be an int"),
        ({0: True}, "must be an int"),
        ({256: 1}, "0..255"),
        ({-1: 1}, "0..255"),
        ({"a": 1}, "0..255"),
        ({1.0: 1}, "0..255"),
    ],
)
def test_bad_weights(weights, match):
    with pytest.raises(ValueError, match=match):
        apportion(weights, SLOTS)
    with pytest.raises(ValueError, match=match):
        build_table(weights)
    with pytest.raises(ValueError, match=match):
        min_moved_fraction(weights, {0: 1})
    with pytest.raises(ValueError, match=match):
        min_moved_fraction({0: 1}, weights)


@pytest.mark.parametrize("slots", [0, 1, 3, 6, 1000, -4, 4.0, True, None])
def test_bad_slots(slots):
    with pytest.raises(ValueError, match="power of two"):
        apportion({0: 1}, slots)
    with pytest.raises(ValueError, match="power of two"):
        build_table({0: 1}, slots=slots)


@pytest.mark.parametrize(
    "previous, match",
    [
        ([0] * (SLOTS - 1), f"expected {SLOTS}"),
        ([0] * (SLOTS + 1), f"expected {SLOTS}"),
        ([0] * (SLOTS - 1) + [256], "neither a member"),
        ([0] * (SLOTS - 1) + [NO_MEMBER - 1], "neither a member"),
        ([0] * (SLOTS - 1) + [-1], "not a slot value"),
        ([0] * (SLOTS - 1) + [1 << 32], "not a slot value"),
        ([0] * (SLOTS - 1) + [0.5], "not a slot value"),
        ([0] * (SLOTS - 1) + [None], "not a slot value"),
    ],
)
def test_bad_previous(previous, match):
    with pytest.raises(ValueError, match=match):
        build_table({0: 1}, previous)
    # Validated even when the result would be all NO_MEMBER.
    with pytest.raises(ValueError, match=match):
        build_table({}, previous)


# Held to the program -----------------------------------------------------------------------


def test_slot_table_builds_tables_of_the_programs_size():
    # The controller builds and reads tables through policy; the program masks with RP_SLOT_MASK.
    assert slot_table.DEFAULT_SLOTS == abi.RP_SLOTS
    assert len(slot_table.build_table({0: 1, 255: 3})) == abi.RP_SLOTS
    # Every member index fits the one-byte slot of rp_gen.slots.
    assert slot_table.MAX_MEMBERS == abi.RP_MAX_MEMBERS <= 256
    assert abi.RpGen.slots.size == abi.RP_SLOTS  # bytes: one per slot
