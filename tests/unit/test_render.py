"""cli/render.py: the status and weights tables at 80 and 120 columns; tables stacked for one print."""

from __future__ import annotations

import re
import socket

from rpctl.cli import render
from rpctl.controller.store.flows import FlowTable

from tests.support.terminal import text_of
from tests.support.views import STATES, group_view, member, pinned_view, strays


def test_weights_table_at_80_columns():
    text = text_of(render.weights_table(group_view()), 80)
    assert "tcp:127.0.0.1:18080" in text
    for name, state_ in STATES.items():
        assert re.search(rf"\b{name}\b.*\b{state_}\b", text), f"{name} {state_} missing:\n{text}"
    assert "25.0%" in text and "12.3%" in text


def test_status_table_shows_every_member_and_state():
    text = text_of(render.status_table(group_view()), 120)
    assert "group tcp-18080" in text and "tcp:127.0.0.1:18080" in text
    for name, state_ in STATES.items():
        assert re.search(rf"\b{name}\b.*\b{state_}\b", text), f"{name} {state_} missing:\n{text}"


def test_status_table_at_80_columns():
    text = text_of(render.status_table(group_view()), 80)
    for name, state_ in STATES.items():
        assert re.search(rf"\b{name}\b.*\b{state_}\b", text), f"{name} {state_} missing:\n{text}"


def test_ipv6_endpoint_is_bracketed():
    view = group_view(family=socket.AF_INET6, addr="::1", proto="udp", port=53)
    assert view.endpoint == "udp:[::1]:53"
    assert "udp:[::1]:53" in text_of(render.weights_table(view), 80)


def _udp_flows_view():
    members = [member(0, "dns-1", flows=1234), member(1, "dns-2", draining=True, queue=0, flows=17),
               member(2, "dns-3", draining=True, queue=0, flows=0)]
    return group_view(members, name="udp-53", proto="udp", flow_table=FlowTable(65536, 1300, {0: 1234, 1: 17}))


def test_status_table_of_a_udp_group_with_flows_has_a_flows_column():
    for width in (80, 120):
        text = text_of(render.status_table(_udp_flows_view()), width)
        lines = text.splitlines()
        header = next(line for line in lines if line.lstrip().startswith("member"))
        assert "flows" in header.split(), text
        assert re.search(r"\bdns-1\b.*\bactive\b.*\b1234\b", text), text
        # Live flows keep a draining member draining though its queue is empty.
        assert re.search(r"\bdns-2\b.*\bdraining\b.*\b17\b", text), text
        assert re.search(r"\bdns-3\b.*\bdrained\b", text), text
        assert "flows 1300/65536" in " ".join(text.split()), text


def test_status_table_without_a_flow_table_has_no_flows_column():
    text = text_of(render.status_table(group_view()), 120)
    assert "flows" not in text


def test_status_table_of_a_quic_group_has_each_members_server_id_and_packets_routed_by_it():
    members = [member(0, "h3-1", flows=12, quic_server_id="00", quic_routed=4321),
               member(1, "h3-2", draining=True, queue=0, flows=3, quic_server_id="0a", quic_routed=99)]
    view = group_view(members, name="h3", proto="udp", quic_server_id_length=1,
                      flow_table=FlowTable(65536, 15, {0: 12, 1: 3}))
    for width in (80, 120):
        text = text_of(render.status_table(view), width)
        assert max(len(line) for line in text.splitlines()) <= width, text
        header = next(line for line in text.splitlines() if line.split()[:2] == ["member", "pid"])
        assert "quic id" in header and "quic routed" in header, text
        assert re.search(r"\bh3-1\b.*\bactive\b.*\b00\b\s+4321\b", text), text
        assert re.search(r"\bh3-2\b.*\bdraining\b.*\b0a\b\s+99\b", text), text
        assert "quic unknown server id 0" in " ".join(text.split()), text
    assert "quic" not in text_of(render.status_table(group_view()), 120)
def test_status_warns_about_an_unmanaged_listener_under_its_table():
    text = text_of(render.status_table(group_view(unmanaged=strays((123, "nc")))), 200)
    assert ("1 unmanaged listener on tcp:127.0.0.1:18080: pid 123 (nc) — it gets no connection while a "
            "member is live; adopt it or stop it") in text
    assert text.index("worker-4") < text.index("unmanaged")
    assert "unmanaged" not in text_of(render.status_table(group_view()), 200)


def test_status_says_adaptive_and_why_a_member_is_throttled():
    view = group_view(adaptive=True)
    view.members[0].throttled = "queue 37, others <= 2"
    text = text_of(render.status_table(view), 200)
    assert "mode weighted, adaptive" in text and "throttle skips 10" in text
    assert re.search(r"\bworker-1\b.*\bthrottled\b", text), text
    assert "worker-1 throttled: queue 37, others <= 2" in text
    assert text.index("worker-4") < text.index("worker-1 throttled")
    plain = text_of(render.status_table(group_view()), 120)
    assert "adaptive" not in plain and "throttle" not in plain


def test_status_says_when_no_serve_samples_an_adaptive_group():
    """A SIGKILLed serve leaves the adaptive flag set: the mode line says nobody samples."""
    sampled = text_of(render.status_table(group_view(adaptive=True, adaptive_sampled_ago=0.2)), 200)
    assert "mode weighted, adaptive" in sampled and "not sampled" not in sampled
    stale = text_of(render.status_table(group_view(adaptive=True, adaptive_sampled_ago=12.4)), 200)
    assert "adaptive (not sampled for 12 s: is rpctl serve running?)" in stale
    never = text_of(render.status_table(group_view(adaptive=True, adaptive_sampled_ago=float("inf"))), 200)
    assert "adaptive (not sampled: is rpctl serve running?)" in never


# A pinned group ---------------------------------------------------------------------------


def test_status_shows_the_mode_and_each_members_pins_in_80_columns():
    text = text_of(render.status_table(pinned_view("cpu")), 80)
    words = " ".join(text.split())  # the title wraps at 80 columns
    assert "mode cpu" in words and "pin fallbacks 3" in words and "pin unassigned 4" in words
    assert "cpu 0,2" in text and "cpu 1" in text and "worker-3" in text
    assert all(len(line) <= 80 for line in text.splitlines())
    rss_text = text_of(render.status_table(pinned_view("rss")), 80)
    assert "mode rss eth0" in rss_text and "queue 0,2" in rss_text and "rss unhashed 5" in " ".join(rss_text.split())


def test_stacked_tables_read_as_the_tables_one_after_another():
    views = [group_view(name=f"tcp-{port}", port=port) for port in (18080, 18081, 18082)]
    tables = [render.status_table(v, 100) for v in views]
    assert text_of(render.stacked(tables), 100) == "".join(text_of(t, 100) for t in tables)
    assert text_of(render.stacked([]), 100) == ""


def test_a_fleet_table_shows_server_generations_as_status_does():
    from rpctl.controller.read import prometheus_source as source

    from tests.support.prometheus import generation_docs

    docs = generation_docs("tcp-7001", {"a0": 1, "a1": 2, "a2": 2}, states={"a0": "drained"})
    views = source.fleet_views({what: source.parse_answer(doc, what) for what, doc in docs.items()})
    a = next(g for g in views if g.name == "tcp-7001")
    text = text_of(render.fleet_table(a, "1m"), 100)
    assert re.search(r"^a1 .* 2$", text, re.MULTILINE) and " gen" in text, text
    assert "generation 1: drained, 0.0% of new work (a0): safe to stop" in text, text
    assert "generation 2: serving, 100.0% of new work (a1, a2)" in text, text
    other = next(g for g in views if g.name == "tcp-7002")
    assert " gen" not in text_of(render.fleet_table(other, "1m"), 100)
