"""One name per counter, from C to the screen.

controller/read/views.py's GROUP_COUNTERS and MEMBER_COUNTERS name each counter once.  The C
fields are held to them here through abi.py (which test_abi holds to bpf/rpctl.h field
for field); `status --json`, the metrics, the status table and the dashboard are held to
them by rendering one hand-built group whose every counter has a value of its own.
"""

from __future__ import annotations

import io

import pytest
from rich.console import Console
from rpctl.cli import json_docs, render
from rpctl.cli.dashboard_history import History, Snapshot
from rpctl.cli.dashboard_screen import render as dashboard_frame
from rpctl.cli.metrics_families import families
from rpctl.controller.contract import abi
from rpctl.controller.read.views import GROUP_COUNTERS, MEMBER_COUNTERS, GroupView
from rpctl.controller.store.flows import FlowTable

from tests.support.metrics import scrape
from tests.support.views import group_view

GROUP_NAMES = [c.name for c in GROUP_COUNTERS]
MEMBER_NAMES = [c.name for c in MEMBER_COUNTERS]


def counted_view(mode: str, flows: bool = False, quic: int = 0, adaptive: bool = False) -> GroupView:
    """Every group counter a distinct value: 101, 102, ... in table order.
    flows: a UDP group with a flow table; quic: its QUIC server id length; adaptive: serve throttles."""
    values = {name: 101 + i for i, name in enumerate(GROUP_NAMES)}
    if flows:
        values.update(proto="udp", flow_table=FlowTable(1024, 900, {0: 7}))
    if quic:
        values.update(proto="udp", quic_server_id_length=quic)
    return group_view(mode=mode, pin_dev="eth0" if mode == "rss" else "", adaptive=adaptive, **values)


def _text(renderable, width: int = 200, height: int = 60) -> str:
    console = Console(file=io.StringIO(), width=width, height=height)
    console.print(renderable)
    return " ".join(console.file.getvalue().split())


def test_the_c_structs_have_the_table_names_in_the_table_order():
    assert [name for name, _ in abi.RpGroupStats._fields_] == GROUP_NAMES
    assert [name for name, _ in abi.RpMemberStats._fields_] == MEMBER_NAMES
    assert len(set(GROUP_NAMES + MEMBER_NAMES)) == len(GROUP_NAMES) + len(MEMBER_NAMES)


def test_status_json_keys_are_the_table_names():
    view = counted_view("weighted")
    (g,) = json_docs.status_json([view])["groups"]
    assert g["counters"] == {name: 101 + i for i, name in enumerate(GROUP_NAMES)}
    for m, member in zip(g["members"], view.members):
        assert {name: m[name] for name in MEMBER_NAMES} == member.counters


def test_metric_names_are_the_table_names():
    got = scrape(families([counted_view("rss")]))
    for i, name in enumerate(GROUP_NAMES):
        family = got[f"rpctl_group_{name}"]
        assert family.type == "counter"
        assert [s.value for s in family.samples if s.name == f"rpctl_group_{name}_total"] == [101 + i]
    for name in MEMBER_NAMES:
        assert got[f"rpctl_member_{name}"].type == "counter"
    counters = {n[len("rpctl_group_"):] for n, f in got.items() if n.startswith("rpctl_group_") and f.type == "counter"}
    assert counters == set(GROUP_NAMES), "a group counter family with a name of its own"


@pytest.mark.parametrize("mode, flows, quic, adaptive, shown", [
    ("weighted", False, 0, False, ["slot_misses", "no_live_member"]),
    ("cpu", False, 0, False, ["slot_misses", "no_live_member", "pin_fallbacks", "pin_unassigned"]),
    ("rss", False, 0, False,
     [n for n in GROUP_NAMES if n not in ("flow_evictions", "quic_unknown_server_id", "throttle_skips")]),
    ("rss", True, 2, True, GROUP_NAMES),
    ("weighted", True, 0, False, ["slot_misses", "no_live_member", "flow_evictions"]),
    ("weighted", False, 1, False, ["slot_misses", "no_live_member", "quic_unknown_server_id"]),
    ("weighted", False, 0, True, ["slot_misses", "no_live_member", "throttle_skips"]),
])
def test_the_status_table_and_the_dashboard_write_the_table_names(mode, flows, quic, adaptive, shown):
    view = counted_view(mode, flows, quic, adaptive)
    history = History()
    history.update(Snapshot(time=0.0, groups=[view]))
    screens = {
        "status table": _text(render.status_table(view, 200)),
        "dashboard": _text(dashboard_frame(Snapshot(time=1.0, groups=[view]), history, 200, 60)),
    }
    for where, text in screens.items():
        for i, counter in enumerate(GROUP_COUNTERS):
            label = f"{counter.label} {101 + i}"
            assert (label in text) == (counter.name in shown), f"{where}, mode {mode}: {label!r}\n{text}"
        # The names counters had on screen before they had one name.
        for old in ("no-live", "unpinned", "fallbacks 101"):
            assert old not in text, f"{where}: {old!r}"
