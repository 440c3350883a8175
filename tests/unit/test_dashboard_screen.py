"""The dashboard's maths, events and layout, from hand-built group views.

No privileges, no bpffs: every snapshot is made here, so rates and shares
can be checked against counters whose answer is known, and the layout at
80x24 and 160x48 against what a terminal of that size can show.
"""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console
from rpctl.cli import dashboard_screen
from rpctl.cli.dashboard_screen import EVENT_STYLE, EventKind, History, Snapshot, choose_columns, render, sparkline
from rpctl.controller.read import views as read_model

from tests.support.views import four, moving_group, moving_member, strays


@pytest.fixture(autouse=True)
def no_system(refuse_system, monkeypatch):
    monkeypatch.setattr(read_model, "read_views", refuse_system)


def frame(snap: Snapshot, history: History, width: int, height: int) -> str:
    console = Console(file=io.StringIO(), width=width, height=height, force_terminal=False)
    console.print(render(snap, history, width, height))
    return console.file.getvalue()


def assert_fits(text: str, width: int, height: int) -> None:
    lines = text.splitlines()
    assert len(lines) <= height, f"{len(lines)} lines for a height of {height}:\n{text}"
    too_long = [line for line in lines if len(line) > width]
    assert not too_long, f"lines wider than {width}: {too_long}"


def history_of(make, seconds: float = 10.0, step: float = 0.25) -> tuple[History, Snapshot]:
    """Snapshots of make(t) every `step` seconds for `seconds`; returns the history and the last one."""
    history = History()
    snap = None
    for i in range(int(seconds / step) + 1):
        t = i * step
        snap = Snapshot(time=t, groups=make(t))
        history.update(snap)
    return history, snap


def column_heads(text: str) -> list[str]:
    head = next(line for line in text.splitlines() if line.startswith("member "))
    return head.split()


# Layout -------------------------------------------------------------------------------


def test_80x24_shows_every_member_state_and_share():
    history, snap = history_of(lambda t: [four(t)])
    text = frame(snap, history, 80, 24)
    assert_fits(text, 80, 24)
    for name, shown in (("worker-1", "● active"), ("worker-2", "◐ draining"), ("worker-3", "○ drained"),
                        ("worker-4", "✖ gone")):
        row = next(line for line in text.splitlines() if line.startswith(name + " "))
        assert shown in row, row
    row1 = next(line for line in text.splitlines() if line.startswith("worker-1 "))
    # 100, 200, 300, 400 per second: worker-1 observed 10 %, at 100 conn/s; target from the view.
    assert re.search(r"25\.0%\s+10\.0%\s+100\b", row1), row1
    assert "tcp:127.0.0.1:18080" in text and "prog 42" in text and "weighted" in text
    assert "1000 conn/s" in text  # the group's total
    assert "slot misses 5" in text and "no live member 6" in text
    assert "migrated 66" in text and "fallback 42" in text  # sums over members


def test_80x24_drops_the_least_important_columns_and_160x48_shows_all():
    history, snap = history_of(lambda t: [four(t)])
    narrow = column_heads(frame(snap, history, 80, 24))
    wide_text = frame(snap, history, 160, 48)
    assert_fits(wide_text, 160, 48)
    wide = column_heads(wide_text)
    assert wide == ["member", "pid", "state", "weight", "target", "observed", "conn/s", "last", "60s",
                    "queue", "migrated", "fallback", "pin"]
    for gone in ("pid", "pin", "fallback", "migrated"):
        assert gone not in narrow
    assert {"member", "state", "weight", "target", "observed", "conn/s"} <= set(narrow)
    row = next(line for line in wide_text.splitlines() if line.startswith("worker-1 "))
    assert row.rstrip().endswith("-")  # pin: nothing is pinned in weighted mode


def test_columns_drop_in_order_of_importance_as_width_shrinks():
    widths = {c: 6 for c in dashboard_screen.COLUMNS if c != "spark"}
    previous = None
    for width in range(200, 10, -1):
        shown, spark = choose_columns(widths, width)
        fixed = sum(widths[c] for c in shown if c != "spark") + spark + 2 * (len(shown) - 1)
        assert fixed <= width or shown == ["name", "state"]
        assert ("spark" in shown) == (spark >= dashboard_screen.SPARK_MIN)
        dropped = [c for c in dashboard_screen.COLUMNS if c not in shown]
        # What is dropped is always a prefix of the drop order: never a column before a less important one.
        assert set(dropped) == set(dashboard_screen.DROP_ORDER[: len(dropped)])
        if previous is not None:
            assert set(shown) <= set(previous)
        previous = shown
    assert previous == ["name", "state"]


@pytest.mark.parametrize("size", [(80, 24), (160, 48), (60, 16), (40, 10), (20, 5), (100, 30)])
def test_no_frame_overflows_its_terminal(size):
    width, height = size
    history, snap = history_of(
        lambda t: [four(t), moving_group([moving_member(i, f"udp-worker-{i}", selected=int(50 * t)) for i in range(9)],
                                       name="dns", proto="udp", port=5353)],
        seconds=3,
    )
    for e in range(30):  # plenty of events for the footer
        history.events.append(dashboard_screen.Event(3.0, None, "web", EventKind.WEIGHTS, f"weights changed #{e}"))
    assert_fits(frame(snap, history, width, height), width, height)


def test_64_members_are_summarised_at_80x24_and_a_draining_one_stays_visible():
    def make(t):
        return [moving_group([moving_member(i, f"member-{i:02d}", selected=int(10 * t), draining=i == 50, queue=4)
                            for i in range(64)])]

    history, snap = history_of(make, seconds=2)
    text = frame(snap, history, 80, 24)
    assert_fits(text, 80, 24)
    rows = [line for line in text.splitlines() if line.startswith("member-")]
    more = re.search(r"\+(\d+) more members \((\d+) active\)", text)
    assert more, text
    assert len(rows) + int(more.group(1)) == 64
    assert int(more.group(2)) == int(more.group(1))  # the one not active is among the rows
    assert any(line.startswith("member-50 ") and "draining" in line for line in rows)
    wide = frame(snap, history, 160, 48)
    assert_fits(wide, 160, 48)
    assert len([line for line in wide.splitlines() if line.startswith("member-")]) > len(rows)


def test_udp_groups_count_datagrams_and_empty_namespaces_say_so():
    history, snap = history_of(
        lambda t: [moving_group([moving_member(0, "dns-1", selected=int(20 * t))], name="dns", proto="udp")], seconds=2
    )
    text = frame(snap, history, 80, 24)
    assert "20 dgram/s" in text and "conn/s" not in text
    empty = frame(Snapshot(0.0, []), History(), 80, 24)
    assert "no group in this network namespace" in empty


def test_a_throttled_member_has_its_own_symbol_and_counts_in_the_summary():
    def make(t):
        return [moving_group([moving_member(i, f"member-{i:02d}", selected=int(10 * t), queue=9 if i < 40 else 1,
                                            throttled="queue 9, others <= 1" if i < 40 else None)
                              for i in range(64)], adaptive=True)]

    history, snap = history_of(make, seconds=2)
    text = frame(snap, history, 80, 24)
    assert_fits(text, 80, 24)
    assert "64 members (24 active, 40 throttled)" in text
    rows = [line for line in text.splitlines() if line.startswith("member-")]
    assert rows and all("◕ throttled" in line for line in rows)  # not active: shown first
    more = re.search(r"\+(\d+) more members \((\d+) active, (\d+) throttled\)", text)
    assert more, text
    assert int(more.group(1)) == int(more.group(2)) + int(more.group(3)) == 64 - len(rows)
    assert int(more.group(3)) == 40 - len(rows)


# Rates, shares, sparklines ----------------------------------------------------------------


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


# Events -----------------------------------------------------------------------------------


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


def test_every_event_kind_has_a_style():
    missing = [kind for kind in EventKind if kind not in EVENT_STYLE]
    assert not missing, f"event kinds with no style: {missing}"
    assert all(EVENT_STYLE[kind] for kind in EventKind)
    assert EventKind("group+") is EventKind.GROUP_ADDED and EventKind("released") is EventKind.RELEASED


def test_footer_shows_the_latest_events_that_fit():
    history, snap = history_of(lambda t: [four(t)], seconds=1)
    for e in range(40):
        event = dashboard_screen.Event(float(e) / 40, None, "web", EventKind.WEIGHTS, f"change number {e}")
        history.events.append(event)
    small = frame(snap, history, 80, 24)
    large = frame(snap, history, 160, 48)
    n_small = len(re.findall(r"change number", small))
    n_large = len(re.findall(r"change number", large))
    assert 1 <= n_small < n_large
    assert "change number 39" in small and "change number 39" in large  # the newest always
    assert "change number 0\n" not in small


# The command, without a terminal ---------------------------------------------------------------


def test_a_group_without_listener_migration_says_so():
    history, snap = history_of(lambda t: [four(t)], seconds=1)
    assert "migrated 66" in frame(snap, history, 160, 48)
    snap.groups[0].migration = False
    text = frame(snap, history, 160, 48)
    assert "no migration" in text and "migrated 66" not in text


def test_a_udp_group_with_flows_shows_live_flows_and_stays_draining_while_it_has_some():
    from rpctl.controller.store.flows import FlowTable

    def make(t):
        members = [moving_member(0, "dns-1", flow_datagrams=int(30 * t), flows=250),
                   moving_member(1, "dns-2", draining=True, queue=0, flow_datagrams=int(10 * t), flows=9)]
        return [moving_group(members, name="dns", proto="udp", flow_table=FlowTable(65536, 300, {0: 250, 1: 9}))]

    history, snap = history_of(make, seconds=2)
    text = frame(snap, history, 120, 24)
    assert "flows" in column_heads(text)
    assert re.search(r"dns-2 .*draining.* 9\b", text), text
    # Datagrams that followed their flow count in the rate.
    assert "40 dgram/s" in text, text
    assert "flows 300/65536" in text
    plain, last = history_of(lambda t: [moving_group([moving_member(0, "a")])], seconds=1)
    assert "flows" not in column_heads(frame(last, plain, 120, 24))


def test_an_unmanaged_listener_is_a_warning_line_of_its_group():
    def make(t):
        g = four(t)
        g.unmanaged = strays((123, "nc"))
        return [g]

    history, snap = history_of(make, seconds=1)
    for width, height in ((160, 48), (80, 24)):
        text = frame(snap, history, width, height)
        assert_fits(text, width, height)
        assert "1 unmanaged listener on tcp:127.0.0.1:18080: pid 123 (nc)" in text
    history, snap = history_of(lambda t: [four(t)], seconds=1)
    assert "unmanaged" not in frame(snap, history, 160, 48)


def fleet(n: int):
    """n groups read through Prometheus, on hosts web-000.. (copies of the recorded ones): healthy."""
    import copy

    from tests.support.prometheus import recorded_views

    base = recorded_views()
    out = []
    for i in range(n):
        g = copy.deepcopy(base[i % len(base)])
        g.instance = f"web-{i:03d}:9464"
        for m in g.members:
            m.observed_share = m.target_share  # exactly on target
        out.append(g)
    return out


def fleet_frame(groups, width=80, height=24) -> list[str]:
    snap = Snapshot(time=1.0, groups=groups)
    history = History()
    history.update(snap)
    console = Console(file=io.StringIO(), width=width, height=height, color_system=None)
    console.print(render(snap, history, width, height))
    return console.file.getvalue().splitlines()


def test_hundreds_of_hosts_fit_80x24_and_what_needs_a_look_comes_first():
    groups = fleet(250)
    for m in groups[137].members:
        m.draining = True  # no active member
    groups[200].members[0].gone = True
    groups[42].members[0].observed_share += 0.3  # far off target
    groups[7].members, groups[7].unreachable = [], True  # its exporter is down
    lines = fleet_frame(groups)
    assert len(lines) <= 24 and all(len(line) <= 80 for line in lines)
    titles = [line.split()[0] for line in lines if line.startswith("web-")]
    assert titles[:4] == ["web-007:9464", "web-137:9464", "web-200:9464", "web-042:9464"]
    assert "its exporter is down or cannot read the pinned state: no figures" in lines
    shown = len(titles)
    assert f"... and {250 - shown} more groups, all healthy" in lines
    # Every shown host's members are shown, not summarised away.
    assert not any("more members" in line for line in lines)


def test_the_summary_counts_the_hidden_hosts_that_need_a_look():
    groups = fleet(300)
    for i in (10, 20, 30, 40, 50, 60):
        groups[i].unmanaged = [read_model.UnmanagedListener(0, 0, None, "")] * i  # more: more urgent
    lines = fleet_frame(groups)
    titles = [line.split()[0] for line in lines if line.startswith("web-")]
    assert titles[0] == "web-060:9464" and len(titles) < 6
    assert f"... and {300 - len(titles)} more groups, {6 - len(titles)} of them need a look" in lines


def test_a_fleet_member_s_rate_and_share_are_prometheus_s():
    (g,) = fleet(1)
    g.members[0].rate = 1234.0
    lines = fleet_frame([g], width=120)
    row = next(line for line in lines if line.startswith(g.members[0].name + " "))
    assert "1234" in row and f"{100 * g.members[0].observed_share:.1f}%" in row


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
