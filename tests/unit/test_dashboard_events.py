"""cli/dashboard_events.py: the events that follow what changed between two snapshots, and
a style for every kind."""

from __future__ import annotations

import pytest
from rpctl.cli.dashboard_events import EVENT_STYLE, EventKind
from rpctl.cli.dashboard_history import History, Snapshot

from tests.support.dashboard import frame
from tests.support.views import moving_group, moving_member


pytestmark = pytest.mark.usefixtures("no_group_read")


def test_events_follow_the_snapshot_that_changed():
    history = History()
    base = {"worker-1": {}, "worker-2": {}, "worker-3": {}}
    steps = [
        ("start", base, None),
        ("register", {**base, "worker-4": {}}, "worker-4 registered (weight 1)"),
        ("drain", {**base, "worker-3": {"draining": True, "queue": 5}}, "worker-3 drain started (queue 5)"),
        ("drained", {**base, "worker-3": {"draining": True, "queue": 0}}, "worker-3 drained (queue empty)"),
        ("undrain", base, "worker-3 undrained (weight 1)"),
        ("gone", {**base, "worker-2": {"gone": True}}, "worker-2 gone (its socket closed)"),
        ("weights", {**base, "worker-2": {"gone": True}, "worker-1": {"weight": 3}},
         "weights changed: worker-1 1->3"),
        ("unregister", {"worker-1": {"weight": 3}, "worker-3": {}}, "worker-2 unregistered"),
        ("replace", {"worker-1": {"weight": 3, "cookie": 999}, "worker-3": {}},
         "worker-1 registered again (socket replaced)"),
    ]
    seen_texts = []
    for t, (what, spec, expected) in enumerate(steps):
        members = [moving_member(i, name, **kw) for i, (name, kw) in enumerate(sorted(spec.items()))]
        # Indexes shift when members leave; events are by name, so that must not matter.
        snap = Snapshot(float(t), [moving_group(members)])
        before = frame(snap, history, 160, 48) if history.last else ""
        if expected:
            assert expected not in before, f"{what}: the event showed before its snapshot"
        new = history.update(snap)
        texts = [e.text for e in new]
        if expected is None:
            assert texts == [], what
        else:
            assert expected in texts, f"{what}: {texts}"
            assert expected in frame(snap, history, 160, 48)
            assert all(e.time == float(t) for e in new)
        seen_texts.extend(texts)
    # Nothing fired twice: a state that lasts is one event, not one per poll.
    assert len(seen_texts) == len(set(seen_texts))
    # The unregistered member left the history as well.
    assert not any(k[1] == "worker-2" for k in history.series)


def test_drain_of_an_empty_queue_is_drain_started_and_drained_at_once():
    history = History()
    history.update(Snapshot(0.0, [moving_group([moving_member(0, "a"), moving_member(1, "b")])]))
    drained_at_once = moving_group([moving_member(0, "a", draining=True, queue=0), moving_member(1, "b")])
    new = history.update(Snapshot(1.0, [drained_at_once]))
    assert [e.kind for e in new] == ["drain", "drained"]


def test_groups_appearing_and_leaving_are_events():
    history = History()
    history.update(Snapshot(0.0, []))
    new = history.update(Snapshot(1.0, [moving_group([moving_member(0, "a")])]))
    assert [(e.kind, e.group) for e in new] == [("group+", "web")]
    assert "tcp:127.0.0.1:18080" in new[0].text
    new = history.update(Snapshot(2.0, []))
    assert [(e.kind, e.text) for e in new] == [("group-", "group web removed")]


def test_a_member_throttled_and_released_are_events():
    history = History()
    history.update(Snapshot(0.0, [moving_group([moving_member(0, "a"), moving_member(1, "b")])]))
    new = history.update(Snapshot(1.0, [moving_group([moving_member(0, "a"), moving_member(1, "b")], adaptive=True)]))
    assert [e.text for e in new] == ["mode weighted -> weighted, adaptive"]
    throttled = moving_group([moving_member(0, "a", throttled="queue 37, others <= 0", queue=37),
                              moving_member(1, "b")], adaptive=True)
    new = history.update(Snapshot(2.0, [throttled]))
    assert [(e.kind, e.text, e.member) for e in new] == [("throttled", "a throttled (queue 37, others <= 0)", "a")]
    assert history.update(Snapshot(3.0, [throttled])) == []
    released = moving_group([moving_member(0, "a", queue=1), moving_member(1, "b")], adaptive=True)
    assert [e.text for e in history.update(Snapshot(4.0, [released]))] == ["a released (queue 1)"]


def test_no_serve_sampling_an_adaptive_group_is_one_event():
    history = History()
    members = [moving_member(0, "a"), moving_member(1, "b")]
    history.update(Snapshot(0.0, [moving_group(members, adaptive=True, adaptive_sampled_ago=0.1)]))
    new = history.update(Snapshot(1.0, [moving_group(members, adaptive=True, adaptive_sampled_ago=2.4)]))
    assert [e.text for e in new] == [
        "mode weighted, adaptive -> weighted, adaptive (not sampled for 2 s: is rpctl serve running?)"]
    assert history.update(Snapshot(2.0, [moving_group(members, adaptive=True, adaptive_sampled_ago=3.4)])) == []


def test_every_event_kind_has_a_style():
    missing = [kind for kind in EventKind if kind not in EVENT_STYLE]
    assert not missing, f"event kinds with no style: {missing}"
    assert all(EVENT_STYLE[kind] for kind in EventKind)
    assert EventKind("group+") is EventKind.GROUP_ADDED and EventKind("released") is EventKind.RELEASED
