"""cli/dashboard_screen.py: the dashboard's layout, from hand-built group views.

No privileges, no bpffs: every snapshot is made here, so the layout at
80x24 and 160x48 can be checked against what a terminal of that size can show.
"""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console
from rpctl.cli import dashboard_history, dashboard_screen
from rpctl.cli.dashboard_events import Event, EventKind
from rpctl.cli.dashboard_history import History, Snapshot
from rpctl.cli.dashboard_screen import choose_columns, render
from rpctl.controller.read import views as read_model

from tests.support.dashboard import frame, history_of
from tests.support.terminal import text_of
from tests.support.views import four, moving_group, moving_member, pinned_view, strays


pytestmark = pytest.mark.usefixtures("no_group_read")


def assert_fits(text: str, width: int, height: int) -> None:
    lines = text.splitlines()
    assert len(lines) <= height, f"{len(lines)} lines for a height of {height}:\n{text}"
    too_long = [line for line in lines if len(line) > width]
    assert not too_long, f"lines wider than {width}: {too_long}"


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
        history.events.append(Event(3.0, None, "web", EventKind.WEIGHTS, f"weights changed #{e}"))
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


def test_footer_shows_the_latest_events_that_fit():
    history, snap = history_of(lambda t: [four(t)], seconds=1)
    for e in range(40):
        event = Event(float(e) / 40, None, "web", EventKind.WEIGHTS, f"change number {e}")
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


# A pinned group ---------------------------------------------------------------------------


def test_dashboard_pin_column_header_and_mode_event():
    history = dashboard_history.History()
    before = pinned_view("cpu")
    before.mode, before.pin_dev = "weighted", ""
    history.update(dashboard_history.Snapshot(time=0.0, groups=[before]))
    snap = dashboard_history.Snapshot(time=1.0, groups=[pinned_view("rss")])
    events = history.update(snap)
    assert [(e.kind, e.text) for e in events] == [("mode", "mode weighted -> rss eth0")]
    text = text_of(dashboard_screen.render(snap, history, 160, 40), 160)
    assert "tcp rss eth0" in text and "pin fallbacks 3" in text and "rss unhashed 5" in text
    row = next(line for line in text.splitlines() if line.startswith("worker-1 "))
    assert row.rstrip().endswith("queue 0,2")
    row3 = next(line for line in text.splitlines() if line.startswith("worker-3 "))
    assert row3.rstrip().endswith("-")


def test_a_group_with_server_generations_shows_a_line_for_each():
    from rpctl.controller.read.generation_views import generation_views

    def make(t):
        g = moving_group([moving_member(0, "nginx-1", generation=1, draining=True, queue=0, selected=int(100 * t)),
                          moving_member(1, "nginx-2", generation=2, selected=int(300 * t))])
        g.generations = generation_views(g.members)
        return [g]

    history, snap = history_of(make)
    text = frame(snap, history, 100, 24)
    assert "generation 1: drained" in text and "safe to stop" in text
    assert "generation 2: serving" in text
    assert_fits(text, 100, 24)
