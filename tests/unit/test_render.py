"""cli/render.py: the status and weights tables at 80 and 120 columns."""

from __future__ import annotations

import io
import re
import socket

from rich.console import Console
from rpctl.cli import render
from tests.support.views import STATES, group_view, strays


def _render(table, width: int) -> str:
    console = Console(file=io.StringIO(), width=width)
    console.print(table)
    return console.file.getvalue()


def test_weights_table_at_80_columns():
    text = _render(render.weights_table(group_view()), 80)
    assert "tcp:127.0.0.1:18080" in text
    for name, state_ in STATES.items():
        assert re.search(rf"\b{name}\b.*\b{state_}\b", text), f"{name} {state_} missing:\n{text}"
    assert "25.0%" in text and "12.3%" in text


def test_status_table_shows_every_member_and_state():
    text = _render(render.status_table(group_view()), 120)
    assert "group tcp-18080" in text and "tcp:127.0.0.1:18080" in text
    for name, state_ in STATES.items():
        assert re.search(rf"\b{name}\b.*\b{state_}\b", text), f"{name} {state_} missing:\n{text}"


def test_status_table_at_80_columns():
    text = _render(render.status_table(group_view()), 80)
    for name, state_ in STATES.items():
        assert re.search(rf"\b{name}\b.*\b{state_}\b", text), f"{name} {state_} missing:\n{text}"


def test_ipv6_endpoint_is_bracketed():
    view = group_view(family=socket.AF_INET6, addr="::1", proto="udp", port=53)
    assert view.endpoint == "udp:[::1]:53"
    assert "udp:[::1]:53" in _render(render.weights_table(view), 80)


def test_status_warns_about_an_unmanaged_listener_under_its_table():
    text = _render(render.status_table(group_view(unmanaged=strays((123, "nc")))), 200)
    assert ("1 unmanaged listener on tcp:127.0.0.1:18080: pid 123 (nc) — it gets no connection while a "
            "member is live; adopt it or stop it") in text
    assert text.index("worker-4") < text.index("unmanaged")
    assert "unmanaged" not in _render(render.status_table(group_view()), 200)


def test_status_says_adaptive_and_why_a_member_is_throttled():
    view = group_view(adaptive=True)
    view.members[0].throttled = "queue 37, others <= 2"
    text = _render(render.status_table(view), 200)
    assert "mode weighted, adaptive" in text and "throttle skips 10" in text
    assert re.search(r"\bworker-1\b.*\bthrottled\b", text), text
    assert "worker-1 throttled: queue 37, others <= 2" in text
    assert text.index("worker-4") < text.index("worker-1 throttled")
    plain = _render(render.status_table(group_view()), 120)
    assert "adaptive" not in plain and "throttle" not in plain
