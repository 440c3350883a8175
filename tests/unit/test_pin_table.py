"""Who serves which CPU or queue, and the pin tables of a generation.  Pure: no privileges."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from rpctl.controller.contract import abi
from rpctl.controller.contract.errors import InvalidInput
from rpctl.controller.tables import pin_table, toeplitz
from rpctl.controller.tables.pin_table import PinPlan

from tests.support import hostile

ONLINE = frozenset({0, 1, 2, 3})


# CPU lists --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, cpus",
    [("0", {0}), ("0-3", {0, 1, 2, 3}), ("0-1,4,6-7\n", {0, 1, 4, 6, 7}), ("", set()), ("5,5", {5})],
)
def test_parse_cpus(text, cpus):
    assert pin_table.parse_cpus(text) == cpus


@pytest.mark.parametrize("text", ["a", "3-1", "1-", "-1", "0x1", "²", "0-99999999999"])
def test_parse_cpus_refuses(text):
    with pytest.raises(ValueError):
        pin_table.parse_cpus(text)


@given(hostile.proc_text("0-1,4,6-7\n", "0\n", "0-3\n"))
@example("0-4294967295")  # four billion CPUs: a set of them would not fit in memory
def test_any_cpu_list_is_cpus_or_a_value_error(text):
    try:
        cpus = pin_table.parse_cpus(text)
    except ValueError:
        return
    assert all(0 <= c <= pin_table.MAX_CPU for c in cpus)


@pytest.mark.parametrize("cpus, text", [({0}, "0"), ({0, 1, 2, 5, 7, 8}, "0-2,5,7-8"), (set(), "")])
def test_format_cpus_round_trips(cpus, text):
    assert pin_table.format_cpus(cpus) == text
    assert pin_table.parse_cpus(text) == cpus


# Assignment from affinity ---------------------------------------------------------------


def test_affinity_one_cpu_each():
    assert pin_table.assign_from_affinity({"a": {0}, "b": {1}}, ONLINE) == {0: "a", 1: "b"}


def test_affinity_several_cpus_per_member_and_offline_cpus_ignored():
    got = pin_table.assign_from_affinity({"a": {0, 1, 9}, "b": {2, 3}}, ONLINE)
    assert got == {0: "a", 1: "a", 2: "b", 3: "b"}


def test_affinity_refuses_a_member_allowed_everywhere_and_names_it():
    with pytest.raises(InvalidInput, match=r"b may run on every CPU \(0-3\)"):
        pin_table.assign_from_affinity({"a": {0}, "b": {0, 1, 2, 3, 4}}, ONLINE)


def test_affinity_refuses_two_members_on_one_cpu_and_names_both():
    with pytest.raises(InvalidInput, match="a and b may both run on CPU 1"):
        pin_table.assign_from_affinity({"a": {0, 1}, "b": {1, 2}}, ONLINE)


def test_affinity_refuses_only_offline_cpus_and_no_member():
    with pytest.raises(InvalidInput, match="only run on offline CPUs"):
        pin_table.assign_from_affinity({"a": {8}}, ONLINE)
    with pytest.raises(InvalidInput, match="no member"):
        pin_table.assign_from_affinity({}, ONLINE)


def test_affinity_on_one_online_cpu_is_always_ambiguous():
    with pytest.raises(InvalidInput, match="every CPU"):
        pin_table.assign_from_affinity({"a": {0}}, frozenset({0}))


# Assignment from --map ----------------------------------------------------------------------


def test_map():
    assert pin_table.assign_from_map({"a": 1, "b": 0}, ["a", "b", "c"], ONLINE) == {1: "a", 0: "b"}


@pytest.mark.parametrize(
    "mapping, says",
    [
        ({"x": 0}, "no member 'x'"),
        ({"a": 7}, "CPU 7 is not online"),
        ({"a": 1, "b": 1}, "a and b are both mapped to CPU 1"),
        ({}, "names no member"),
    ],
)
def test_map_refuses(mapping, says):
    with pytest.raises(InvalidInput, match=says):
        pin_table.assign_from_map(mapping, ["a", "b"], ONLINE)


def test_map_refuses_a_cpu_past_the_pin_table():
    with pytest.raises(InvalidInput, match="past the"):
        pin_table.assign_from_map({"a": abi.RP_MAX_PINS}, ["a"], frozenset({abi.RP_MAX_PINS}))


def test_queue_assignment_composes_queue_cpu_and_cpu_member():
    queues, left = pin_table.queue_assignment({0: 0, 1: 1, 2: 0, 3: None, 4: 3}, {0: "a", 1: "b"})
    assert queues == {0: "a", 1: "b", 2: "a"} and left == [3, 4]


# Generations ----------------------------------------------------------------------------


def test_weighted_generation_has_no_pins():
    gen = pin_table.next_gen(None, None)
    assert gen.mode == abi.RP_MODE_WEIGHTED
    assert all(p == abi.RP_NO_MEMBER for p in gen.pin)
    assert pin_table.pins_by_member(gen) == {}


def test_cpu_plan_is_carried_to_the_next_generation_with_fresh_availability():
    gen = pin_table.next_gen(None, PinPlan(abi.RP_MODE_CPU, {0: 4, 1: 7, 2: 4}))
    gen.live[0] = 4
    pin_table.refresh(gen, present={4, 7}, available={4, 7})
    assert pin_table.pins_by_member(gen) == {4: [0, 2], 7: [1]}
    assert gen.pin[0] == 4 and gen.pin[3] == abi.RP_NO_MEMBER

    nxt = pin_table.next_gen(gen, None)  # a weight change or drain: pins stay
    assert nxt.mode == abi.RP_MODE_CPU and nxt.live[0] == 0
    pin_table.refresh(nxt, present={4, 7}, available={4})  # 7 drains
    assert nxt.pin[1] == 7 | abi.RP_PIN_UNAVAILABLE and nxt.pin[0] == 4
    assert pin_table.pins_by_member(nxt) == {4: [0, 2], 7: [1]}, "a draining member keeps its CPUs on record"

    back = pin_table.next_gen(nxt, None)
    pin_table.refresh(back, present={4, 7}, available={4, 7})  # undrained
    assert back.pin[1] == 7

    gone = pin_table.next_gen(back, None)
    pin_table.refresh(gone, present={7}, available={7})  # 4 unregistered: its index may be reused
    assert gone.pin[0] == gone.pin[2] == abi.RP_NO_MEMBER and pin_table.pins_by_member(gone) == {7: [1]}


def test_off_clears_the_tables():
    gen = pin_table.next_gen(None, PinPlan(abi.RP_MODE_CPU, {0: 1}))
    off = pin_table.next_gen(gen, pin_table.WEIGHTED)
    assert off.mode == abi.RP_MODE_WEIGHTED and off.pin[0] == abi.RP_NO_MEMBER


def test_rss_plan_writes_the_table_and_the_hash_rows():
    key = bytes(range(40))
    plan = PinPlan(abi.RP_MODE_RSS, {0: 1, 1: 2}, dev="eth0", rss_flags=abi.RP_RSS_IPV4 | abi.RP_RSS_IPV4_PORTS,
                   indir=[0, 1, 1, 0], key=key)
    gen = pin_table.next_gen(None, plan)
    assert (gen.mode, gen.pin_dev, gen.rss_indir_size) == (abi.RP_MODE_RSS, b"eth0", 4)
    assert list(gen.rss_indir[:4]) == [0, 1, 1, 0]
    tables = toeplitz.byte_tables(key, abi.RP_RSS_INPUT_MAX)
    assert [list(row) for row in gen.rss_hash] == tables


def test_rss_plan_with_a_16_byte_key_fills_the_ipv4_rows_only():
    gen = pin_table.next_gen(None, PinPlan(abi.RP_MODE_RSS, {0: 0}, dev="x", indir=[0], key=bytes(range(1, 17))))
    assert any(gen.rss_hash[11]) and not any(gen.rss_hash[12])


@pytest.mark.parametrize(
    "plan",
    [
        PinPlan(abi.RP_MODE_CPU, {abi.RP_MAX_PINS: 0}),
        PinPlan(abi.RP_MODE_RSS, {0: 0}, dev="eth0", indir=[], key=bytes(40)),
        PinPlan(abi.RP_MODE_RSS, {0: 0}, dev="x" * 16, indir=[0], key=bytes(40)),
    ],
)
def test_bad_plans_are_refused(plan):
    with pytest.raises(InvalidInput):
        pin_table.next_gen(None, plan)


def test_mode_names():
    assert [pin_table.mode_name(m) for m in (0, 1, 2)] == ["weighted", "cpu", "rss"]
    assert pin_table.mode_name(9) == "unknown(9)"
