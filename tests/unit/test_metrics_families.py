"""cli/metrics_families.py: group views -> the metric families `rpctl metrics` serves.

The families are read back through prometheus_client's own text format and
parser, so what is checked is what Prometheus would store.  The group views
are tests/support/views.py's (four members, one per state); no privileges and
no bpffs.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest
from rpctl.cli import metrics_cmd
from rpctl.cli.metrics_families import STATES, families

from tests.support.metrics import by_member, samples, scrape
from tests.support.views import STATES as MEMBER_STATES
from tests.support.views import group_view, member, strays

README = Path(__file__).resolve().parents[2] / "README.md"
NAME_RE = re.compile(r"^rpctl_[a-z][a-z0-9_]*$")


pytestmark = pytest.mark.usefixtures("groups_unreadable")


# The mapping -----------------------------------------------------------------------


def test_counters_gauges_and_info_of_a_tcp_group():
    view = group_view()
    got = scrape(families([view]))

    assert got["rpctl_up"].type == "gauge" and samples(got["rpctl_up"]) == {(): 1.0}
    for family, field in (("rpctl_member_selected", "selected"), ("rpctl_member_fallback", "fallback"),
                          ("rpctl_member_migrated", "migrated"), ("rpctl_member_pinned", "pinned")):
        assert got[family].type == "counter"
        assert by_member(got[family], family + "_total") == {m.name: getattr(m, field) for m in view.members}
        for labels in samples(got[family], family + "_total"):
            assert dict(labels)["group"] == "tcp-18080" and set(dict(labels)) == {"group", "member"}
    # test_cli's members have different counters each: a mix-up of members would show.
    assert len(set(by_member(got["rpctl_member_selected"], "rpctl_member_selected_total").values())) == 4

    assert by_member(got["rpctl_member_weight"]) == {m.name: m.weight for m in view.members}
    assert by_member(got["rpctl_member_queued_connections"]) == {m.name: m.queue for m in view.members}
    assert samples(got["rpctl_member_queued_bytes"]) == {}, "a TCP group has no bytes queued"

    (info_labels,) = samples(got["rpctl_group_info"])
    assert dict(info_labels) == {
        "group": "tcp-18080", "endpoint": "tcp:127.0.0.1:18080", "protocol": "tcp", "mode": "weighted",
        "program_id": "42", "migration": "true", "adaptive": "false", "balance": "hash",
    }
    assert samples(got["rpctl_member_throttled"]) == {}, "a group that is not adaptive throttles nobody"
    assert samples(got["rpctl_group_info"])[info_labels] == 1.0
    for family, value in (("rpctl_group_slot_misses", 5), ("rpctl_group_no_live_member", 6),
                          ("rpctl_group_pin_fallbacks", 7), ("rpctl_group_pin_unassigned", 8),
                          ("rpctl_group_rss_unhashed", 9), ("rpctl_group_throttle_skips", 10)):
        assert got[family].type == "counter"
        assert samples(got[family], family + "_total") == {(("group", "tcp-18080"),): value}


def test_state_has_one_series_per_state_and_one_is_set():
    got = scrape(families([group_view()]))["rpctl_member_state"]
    assert got.type == "gauge"
    assert set(STATES) == {"active", "throttled", "draining", "drained", "gone"}
    series = samples(got)
    assert len(series) == 4 * len(STATES)
    for name, state in MEMBER_STATES.items():
        mine = {dict(k)["state"]: v for k, v in series.items() if dict(k)["member"] == name}
        assert mine == {s: (1.0 if s == state else 0.0) for s in STATES}, name


def test_an_adaptive_group_says_which_member_is_throttled():
    view = group_view(adaptive=True)
    view.members[0].throttled = "queue 37, others <= 2"
    got = scrape(families([view]))
    assert got["rpctl_member_throttled"].type == "gauge"
    assert by_member(got["rpctl_member_throttled"]) == {"worker-1": 1, "worker-2": 0, "worker-3": 0, "worker-4": 0}
    state = {dict(k)["state"]: v for k, v in samples(got["rpctl_member_state"]).items()
             if dict(k)["member"] == "worker-1"}
    assert state["throttled"] == 1.0 and state["active"] == 0.0
    assert dict(next(iter(samples(got["rpctl_group_info"]))))["adaptive"] == "true"


def test_udp_queue_is_in_bytes_and_an_unknown_queue_is_left_out():
    view = group_view(
        members=[member(0, "dns-1", queue=512), member(1, "dns-2", gone=True, queue=None)],
        proto="udp", family=socket.AF_INET6, addr="::1", port=53, migration=False,
    )
    got = scrape(families([view]))
    assert by_member(got["rpctl_member_queued_bytes"]) == {"dns-1": 512}
    assert samples(got["rpctl_member_queued_connections"]) == {}
    (info_labels,) = samples(got["rpctl_group_info"])
    info = dict(info_labels)
    assert (info["endpoint"], info["protocol"], info["migration"]) == ("udp:[::1]:53", "udp", "false")


def test_several_groups_are_told_apart_by_their_label():
    web, dns = group_view(name="web"), group_view(name="dns", members=[member(0, "worker-1", selected=9)])
    got = scrape(families([web, dns]))["rpctl_member_selected"]
    series = {(dict(k)["group"], dict(k)["member"]): v for k, v in samples(got, "rpctl_member_selected_total").items()}
    assert series[("dns", "worker-1")] == 9 and series[("web", "worker-1")] == 100
    assert len(series) == 5


def test_not_read_is_up_0_and_nothing_else():
    got = scrape(families([], up=False))
    assert samples(got["rpctl_up"]) == {(): 0.0}
    assert all(not f.samples for name, f in got.items() if name != "rpctl_up")


def test_no_group_lists_every_family_without_samples():
    got = scrape(families([]))
    assert samples(got["rpctl_up"]) == {(): 1.0}
    assert set(got) == set(scrape(families([group_view()])))


def test_names_follow_the_conventions_and_are_documented():
    readme = README.read_text()
    help_text = metrics_cmd.DESCRIPTION
    for f in families([group_view()]):
        assert NAME_RE.match(f.name), f.name
        assert f.documentation, f.name
        exposed = f.name + "_total" if f.type == "counter" else f.name + "_info" if f.type == "info" else f.name
        assert not (f.type != "counter" and exposed.endswith("_total")), exposed
        assert f"`{exposed}`" in readme, f"README.md does not list {exposed}"
        assert exposed in help_text, f"rpctl metrics --help does not list {exposed}"


def test_unmanaged_listeners_is_a_gauge_per_group_left_out_when_not_read():
    got = scrape(families([group_view(unmanaged=strays((123, "nc"), (124, "nc"))),
                           group_view(name="quiet"), group_view(name="unread", unmanaged=None)]))
    family = got["rpctl_group_unmanaged_listeners"]
    assert family.type == "gauge"
    assert samples(family) == {(("group", "tcp-18080"),): 2.0, (("group", "quiet"),): 0.0}


def test_server_generations_have_a_share_and_a_state_each():
    from rpctl.controller.read.generation_views import generation_views

    view = group_view([member(0, "a-1", generation=1, draining=True, queue=0, target_share=0.0),
                       member(1, "b-1", generation=2, target_share=1.0)], name="web")
    view.generations = generation_views(view.members)
    fams = {f.name: f for f in families([view])}
    assert {tuple(s.labels.values()): s.value for s in fams["rpctl_member_server_generation"].samples} == {
        ("web", "a-1"): 1, ("web", "b-1"): 2}
    assert {s.labels["generation"]: s.value for s in fams["rpctl_generation_share"].samples} == {"1": 0.0, "2": 1.0}
    states = {(s.labels["generation"], s.labels["state"]) for s in fams["rpctl_generation_state"].samples if s.value}
    assert states == {("1", "drained"), ("2", "serving")}
