"""controller/ops/rollout.py: reconcile's generations step (pure)."""

from __future__ import annotations

import re

import pytest
from rpctl.controller.contract.errors import InvalidInput
from rpctl.controller.ops.rollout import Seatholder, steer
from rpctl.controller.store.membership import NO_MARK, Mark
from rpctl.controller.tables.server_generations import NEWEST, Rollout, Verdict

CANARY = Rollout(5)


def holder(name: str, key: str, gen: int = 0, verdict=Verdict.NONE, canary=False, weight=1, draining=False):
    return Seatholder(name, key, Mark(gen, verdict, canary) if gen else NO_MARK, weight, draining)


def test_the_first_server_is_generation_1_and_takes_all():
    out = steer("web", NEWEST, [holder("a-1", "m1"), holder("a-2", "m1")])
    assert out.members == {"a-1": (1, False, Mark(1)), "a-2": (1, False, Mark(1))}
    assert out.lines == ("group web: generation 1: takes new work",)


def test_newest_drains_the_old_generation_when_a_new_one_appears():
    out = steer("web", NEWEST, [holder("a-1", "m1", 1), holder("a-2", "m2")])
    assert out.members == {"a-1": (1, True, Mark(1)), "a-2": (1, False, Mark(2))}
    assert out.lines == ("group web: generation 1: draining (takes no new work)",
                         "group web: generation 2: takes new work")


def test_a_reload_keeps_the_generation_and_logs_nothing():
    out = steer("web", NEWEST, [holder("a-1", "m1", 1), holder("a-2", "m1")])
    assert out.members["a-2"] == (1, False, Mark(1)) and out.lines == ()


def test_a_canary_takes_its_percent_by_weight():
    out = steer("web", CANARY, [holder("a-1", "m1", 1, weight=3), holder("a-2", "m1", 1), holder("b-1", "m2")])
    w = {n: v[0] for n, v in out.members.items()}
    assert w["b-1"] / sum(w.values()) == pytest.approx(0.05, abs=0.001)
    assert w["a-1"] == 3 * w["a-2"]
    assert out.members["b-1"][2] == Mark(2, Verdict.NONE, canary=True)
    assert "group web: generation 2: canary, 5 % of new work" in out.lines


def test_a_file_drain_still_drains_and_leaves_the_canary_maths():
    out = steer("web", CANARY, [holder("a-1", "m1", 1), holder("a-2", "m1", 1, draining=True), holder("b-1", "m2")])
    assert out.members["a-2"][1] is True and out.members["a-1"][0] == 9500 and out.members["b-1"][0] == 500


def test_promote_and_rollback_give_the_newest_their_verdict():
    members = [holder("a-1", "m1", 1), holder("b-1", "m2", 2, canary=True)]
    promoted = steer("web", CANARY, members, verdict=Verdict.PROMOTED)
    assert promoted.members == {"a-1": (1, True, Mark(1)), "b-1": (1, False, Mark(2, Verdict.PROMOTED))}
    back = steer("web", CANARY, members, verdict=Verdict.ROLLED_BACK)
    assert back.members == {"a-1": (1, False, Mark(1)), "b-1": (1, True, Mark(2, Verdict.ROLLED_BACK))}


@pytest.mark.parametrize("members, verdict, message", [
    ([holder("a-1", "m1", 1)], Verdict.PROMOTED, "generation 1 is no canary (it takes all new work already)"),
    ([holder("a-1", "m1", 1)], Verdict.ROLLED_BACK, "generation 1 is its only one: nothing to go back to"),
    ([holder("a-1", "m1", 1), holder("b-1", "m2", 2, Verdict.ROLLED_BACK)], Verdict.PROMOTED,
     "generation 2 is rolled back already"),
    ([], Verdict.PROMOTED, "it has no generation yet"),
])
def test_a_verdict_that_cannot_be_given_is_refused(members, verdict, message):
    with pytest.raises(InvalidInput, match=re.escape(message)):
        steer("web", CANARY, members, verdict=verdict)


def test_a_canary_that_lost_a_member_is_rolled_back():
    members = [holder("a-1", "m1", 1), holder("b-2", "m2", 2, canary=True)]
    out = steer("web", CANARY, members, leaving=[Mark(2, Verdict.NONE, True)])
    assert out.members["b-2"] == (1, True, Mark(2, Verdict.ROLLED_BACK))
    assert out.members["a-1"] == (1, False, Mark(1))
    assert out.lines[0] == "group web: generation 2 (canary) lost a member: rolled back, generation 1 takes all new work again"


def test_a_canary_whose_members_all_died_leaves_the_previous_generation_all():
    out = steer("web", CANARY, [holder("a-1", "m1", 1)], leaving=[Mark(2, Verdict.NONE, True)] * 2)
    assert out.members == {"a-1": (1, False, Mark(1))}
    assert out.lines == ("group web: generation 2 (canary) lost a member: rolled back, generation 1 takes all new work again",
                         "group web: generation 2: no member left")


def test_an_old_generation_that_leaves_is_no_rollback():
    out = steer("web", CANARY, [holder("b-1", "m2", 2, Verdict.PROMOTED)], leaving=[Mark(1)])
    assert out.members == {"b-1": (1, False, Mark(2, Verdict.PROMOTED))}
    assert out.lines == ("group web: generation 1: no member left",)
