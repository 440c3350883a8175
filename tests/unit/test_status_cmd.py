"""`rpctl status` in-process: no group, JSON, tables, missing privileges and groups."""

from __future__ import annotations

import json
import re

import pytest
from rpctl.cli import json_docs
from rpctl.controller import views as read_model
from rpctl.controller.errors import NotFound, PermissionDenied
from tests.support.cli import assert_one_error_line, explode, invoke
from tests.support.views import STATES, group_view

pytestmark = pytest.mark.usefixtures("cli_without_system")


def test_status_with_no_group(monkeypatch):
    calls = []
    monkeypatch.setattr(read_model, "read_views", lambda group=None: calls.append(group) or [])
    status, out, err = invoke(["status"])
    assert (status, out, err) == (0, "no group in this network namespace\n", "")
    assert calls == [None]


def test_status_json_with_no_group(monkeypatch):
    monkeypatch.setattr(read_model, "read_views", lambda group=None: [])
    status, out, err = invoke(["status", "--json"])
    assert status == 0 and err == ""
    assert json.loads(out) == {"groups": []}


def test_status_without_privileges(monkeypatch):
    explode(monkeypatch, PermissionDenied("bpffs is not mounted at /sys/fs/bpf and mounting it needs root"))
    status, out, err = invoke(["status"])
    assert status == 5 and out == ""
    assert "needs root" in assert_one_error_line(err)


def test_status_of_a_missing_group(monkeypatch):
    calls = []

    def views(group=None):
        calls.append(group)
        raise NotFound(f"no group {group!r} in this network namespace")

    monkeypatch.setattr(read_model, "read_views", views)
    status, _, err = invoke(["status", "--group", "web"])
    assert status == 3
    assert assert_one_error_line(err) == "rpctl: no group 'web' in this network namespace"
    assert calls == ["web"]


def test_status_prints_tables_and_json(monkeypatch):
    view = group_view()
    monkeypatch.setattr(read_model, "read_views", lambda group=None: [view])
    status, out, err = invoke(["status"])
    assert status == 0 and err == ""
    for name, state_ in STATES.items():
        assert re.search(rf"\b{name}\b.*\b{state_}\b", out), out
    status, out, _ = invoke(["status", "--json"])
    assert status == 0
    assert json.loads(out) == json_docs.status_json([view])
