"""cli/dashboard_triage.py: which groups need a look, and which first."""

from __future__ import annotations

from rpctl.cli.dashboard_triage import OFF_TARGET, by_urgency, look_score, needs_a_look
from rpctl.controller.read.views import UnmanagedListener

from tests.support.views import group_view, member


def two(name: str, a: dict, b: dict, **kw):
    """A group of two members on target (half each), but for what `a` and `b` change."""
    on_target = {"target_share": 0.5, "observed_share": 0.5}
    return group_view([member(0, "a", **{**on_target, **a}), member(1, "b", **{**on_target, **b})], name=name, **kw)


def test_what_needs_a_look_comes_first_the_rest_in_order():
    healthy = two("healthy", {}, {})
    slightly_off = two("slightly-off", {"observed_share": 0.5 + OFF_TARGET / 2}, {})
    off = two("off", {"observed_share": 0.5 + 2 * OFF_TARGET}, {})
    unmanaged = two("unmanaged", {}, {}, unmanaged=[UnmanagedListener(0, 0, None, "")])
    gone = two("gone", {}, {"gone": True})
    no_active = two("no-active", {"draining": True, "queue": 3}, {"draining": True, "queue": 0})
    unreachable = group_view([], name="unreachable", unreachable=True)
    also_healthy = two("also-healthy", {}, {})
    groups = [healthy, off, slightly_off, unmanaged, gone, no_active, unreachable, also_healthy]
    assert [g.name for g in by_urgency(groups)] == [
        "unreachable", "no-active", "gone", "unmanaged", "off", "slightly-off", "healthy", "also-healthy"]
    assert [g.name for g in groups if needs_a_look(g)] == ["off", "unmanaged", "gone", "no-active", "unreachable"]


def test_only_an_active_member_s_share_can_be_off_target():
    draining_off = two("d", {"draining": True, "queue": 3, "observed_share": 0.9}, {})
    assert look_score(draining_off)[-1] == 0.0 and not needs_a_look(draining_off)
