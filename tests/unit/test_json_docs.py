"""cli/json_docs.py: the stable JSON of `status --json` and `weights --json`."""

from __future__ import annotations

import json

import pytest
from rpctl.cli import json_docs
from rpctl.controller.store.flows import FlowTable

from tests.support.views import STATES, group_view, member, pinned_view, strays

GROUP_KEYS = {
    "name", "protocol", "address", "port", "program_id", "mode", "pin_device", "migration", "adaptive", "adaptive_sampled",
    "generation",
    "published_ns", "counters", "flow_table", "members", "unmanaged", "quic_server_id_length",
    "balance", "server_generations",
}


COUNTER_KEYS = {"slot_misses", "no_live_member", "pin_fallbacks", "pin_unassigned", "rss_unhashed", "flow_evictions",
                "quic_unknown_server_id", "throttle_skips"}


MEMBER_KEYS = {
    "name", "index", "pid", "fd", "shared", "processes", "cookie", "state", "weight", "target_share", "observed_share", "selected",
    "fallback", "migrated", "pinned", "pins", "selected_since_change", "queue", "flow_datagrams", "flows_created",
    "flows_reassigned", "flows", "quic_routed", "quic_server_id", "throttled", "server_generation",
}


WEIGHTS_KEYS = {"group", "members"}


WEIGHTS_MEMBER_KEYS = {"name", "state", "weight", "target_share", "observed_share", "selected_since_change"}


def test_status_json_keys_and_values():
    view = group_view()
    doc = json_docs.status_json([view])
    json.dumps(doc)  # serialisable as it is
    assert set(doc) == {"groups"}
    (g,) = doc["groups"]
    assert set(g) == GROUP_KEYS
    assert set(g["counters"]) == COUNTER_KEYS
    assert g["counters"] == {"slot_misses": 5, "no_live_member": 6, "pin_fallbacks": 7, "pin_unassigned": 8,
                             "rss_unhashed": 9, "flow_evictions": 0, "quic_unknown_server_id": 0, "throttle_skips": 10}
    assert g["adaptive"] is False
    assert g["pin_device"] is None and g["quic_server_id_length"] is None
    assert g["flow_table"] is None and all(m["flows"] is None for m in g["members"])
    assert (g["name"], g["protocol"], g["address"], g["port"]) == ("tcp-18080", "tcp", "127.0.0.1", 18080)
    assert (g["program_id"], g["generation"], g["mode"]) == (42, 1, "weighted")
    assert g["published_ns"] == view.published_ns
    assert [m["name"] for m in g["members"]] == list(STATES)
    for m in g["members"]:
        assert set(m) == MEMBER_KEYS
        assert m["state"] == STATES[m["name"]]
    first = g["members"][0]
    assert (first["pid"], first["index"], first["cookie"], first["queue"]) == (4200, 0, 8193, 2)
    assert first["selected_since_change"] == 10
    assert first["observed_share"] == 0.123457
    assert g["unmanaged"] == []
    assert json_docs.status_json([]) == {"groups": []}


def test_status_json_says_adaptive_and_why_a_member_is_throttled():
    view = group_view(adaptive=True)
    view.members[0].throttled = "queue 37, others <= 2"
    (g,) = json_docs.status_json([view])["groups"]
    assert g["adaptive"] is True and g["adaptive_sampled"] is True
    first, second = g["members"][:2]
    assert (first["state"], first["throttled"]) == ("throttled", "queue 37, others <= 2")
    assert (second["state"], second["throttled"]) == ("draining", None)


def test_status_json_lists_unmanaged_listeners_and_null_when_not_read():
    view = group_view(unmanaged=strays((123, "nc"), (None, "")))
    (g,) = json_docs.status_json([view])["groups"]
    assert g["unmanaged"] == [{"pid": 123, "comm": "nc", "cookie": 9000, "inode": 7000},
                              {"pid": None, "comm": "", "cookie": 9001, "inode": 7001}]
    (g,) = json_docs.status_json([group_view(unmanaged=None)])["groups"]
    assert g["unmanaged"] is None


def test_weights_json_keys_and_values():
    view = group_view()
    view.members[3].observed_share = None
    doc = json_docs.weights_json(view)
    json.dumps(doc)
    assert set(doc) == WEIGHTS_KEYS
    assert doc["group"] == "tcp-18080"
    for m in doc["members"]:
        assert set(m) == WEIGHTS_MEMBER_KEYS
        assert m["state"] == STATES[m["name"]]
    assert doc["members"][0]["target_share"] == 0.25
    assert doc["members"][3]["observed_share"] is None


def test_status_json_of_a_udp_group_with_flows():
    members = [member(0, "dns-1", flows=12), member(1, "dns-2", draining=True, queue=0, flows=3)]
    view = group_view(members, proto="udp", flow_table=FlowTable(65536, 20, {0: 12, 1: 3}),
                      flow_idle_timeout=30.0)
    (g,) = json_docs.status_json([view])["groups"]
    assert g["flow_table"] == {"size": 65536, "entries": 20, "idle_timeout": 30.0}
    assert [(m["flows"], m["state"]) for m in g["members"]] == [(12, "active"), (3, "draining")]


@pytest.mark.parametrize("ago, sampled", [(0.1, True), (2.5, False), (float("inf"), False), (None, True)])
def test_status_json_says_whether_serve_samples_an_adaptive_group(ago, sampled):
    """None: not known (read through Prometheus), so not claimed unsampled."""
    (g,) = json_docs.status_json([group_view(adaptive=True, adaptive_sampled_ago=ago)])["groups"]
    assert g["adaptive_sampled"] is sampled
    (g,) = json_docs.status_json([group_view(adaptive_sampled_ago=ago)])["groups"]
    assert g["adaptive_sampled"] is None


# A pinned group ---------------------------------------------------------------------------


def test_status_json_in_a_pinned_mode():
    (g,) = json_docs.status_json([pinned_view("rss")])["groups"]
    assert (g["mode"], g["pin_device"]) == ("rss", "eth0")
    assert g["counters"]["pin_fallbacks"] == 3 and g["counters"]["rss_unhashed"] == 5
    assert [(m["pins"], m["pinned"]) for m in g["members"]] == [([0, 2], 40), ([1], 41), ([], 42)]
