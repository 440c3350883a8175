"""cli/dashboard_history.py: rates, recent shares and sparklines from the totals of successive
snapshots, checked against synthetic counters whose answer is known."""

from __future__ import annotations

import pytest
from rpctl.cli.dashboard_history import History, Snapshot, sparkline

from tests.support.dashboard import history_of
from tests.support.views import moving_group, moving_member


pytestmark = pytest.mark.usefixtures("no_group_read")


def two_members(a_rate, b_rate):
    """Members a and b whose counters grow at a_rate(t) and b_rate(t) per second (1 s samples)."""
    totals = {"a": 0.0, "b": 0.0}

    def make(t):
        if t > 0:
            totals["a"] += a_rate(t)
            totals["b"] += b_rate(t)
        # Spread over the three counters: the dashboard counts every way a connection arrives.
        a, b = int(totals["a"]), int(totals["b"])
        return [moving_group([moving_member(0, "a", selected=a - a // 4, fallback=a // 8, migrated=a // 4 - a // 8),
                            moving_member(1, "b", selected=b)])]

    return make


def test_rate_share_and_group_rate_from_synthetic_counters():
    # 10 s of a=100/s, b=300/s, then 5 s of a silent and b at 300/s.
    make = two_members(lambda t: 100 if t <= 10 else 0, lambda t: 300)
    history = History()
    for t in range(0, 11):
        snap = Snapshot(float(t), make(t))
        history.update(snap)
    g = snap.groups[0]
    a, b = g.members
    assert history.rate("web", a) == pytest.approx(100)
    assert history.rate("web", b) == pytest.approx(300)
    assert history.group_rate(g) == pytest.approx(400)
    assert history.share(g, a) == pytest.approx(0.25)
    assert history.share(g, b) == pytest.approx(0.75)
    for t in range(11, 16):
        snap = Snapshot(float(t), make(t))
        history.update(snap)
    g = snap.groups[0]
    a, b = g.members
    # The share is over the last 5 s only: a had nothing in them.
    assert history.rate("web", a) == pytest.approx(0)
    assert history.share(g, a) == pytest.approx(0.0)
    assert history.share(g, b) == pytest.approx(1.0)
    # Over 10 s it would still remember a.
    assert history.share(g, a, seconds=10) == pytest.approx(500 / (500 + 3000))
    assert history.per_second("web", a, 8) == pytest.approx([100, 100, 100, 0, 0, 0, 0, 0])


def test_rate_is_over_about_one_second_even_with_fast_polls():
    make = two_members(lambda t: 10 if t < 5 else 90, lambda t: 0)
    history = History()
    for i in range(0, 41):  # 0.25 s polls over 10 s; 40/s then 360/s (10 resp. 90 per poll)
        history.update(Snapshot(i * 0.25, make(i * 0.25)))
    a = history.last.groups[0].members[0]
    assert history.rate("web", a) == pytest.approx(360)
    g = history.last.groups[0]
    assert (history.share(g, g.members[0]), history.share(g, g.members[1])) == (1.0, 0.0)


def test_rates_need_two_snapshots_and_survive_a_counter_reset():
    history = History()
    history.update(Snapshot(0.0, [moving_group([moving_member(0, "a", selected=500)])]))
    g = history.last.groups[0]
    assert history.rate("web", g.members[0]) is None
    assert history.share(g, g.members[0]) is None
    assert history.group_rate(g) is None
    history.update(Snapshot(1.0, [moving_group([moving_member(0, "a", selected=20)])]))  # statistics reset
    history.update(Snapshot(2.0, [moving_group([moving_member(0, "a", selected=70)])]))
    assert history.rate("web", history.last.groups[0].members[0]) == pytest.approx(50)


def test_history_keeps_one_minute():
    make = two_members(lambda t: 1, lambda t: 1)
    history = History()
    for t in range(0, 200):
        history.update(Snapshot(float(t), make(t)))
    series = next(iter(history.series.values()))
    assert series.times[0] >= 200 - 1 - 60 - 2
    assert len(history.per_second("web", history.last.groups[0].members[0], 60)) == 60


def test_sparkline_maps_rates_to_blocks():
    assert sparkline([None, 0, 1, 2, 4, 8]) == " ▁▂▃▅█"
    assert sparkline([0, 0]) == "▁▁"
    assert sparkline([5], scale=10) == "▅"
    history, snap = history_of(two_members(lambda t: 10 * t, lambda t: 0), seconds=5, step=1)
    line = history.sparkline("web", snap.groups[0].members[0], seconds=8)
    assert line == "   ▂▄▅▇█"  # 3 unknown seconds, then 10, 20, 30, 40, 50 per second (of 50: 7 steps)
