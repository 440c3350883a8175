"""`rpctl status` in-process: no group, JSON, tables, missing privileges and groups."""

from __future__ import annotations

import json
import re

import pytest
from rpctl.cli import json_docs
from rpctl.controller.contract.errors import NotFound, PermissionDenied
from rpctl.controller.read import views as read_model

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


def test_status_through_prometheus_json():
    from tests.support.prometheus import FakeApi, recorded_answers

    with FakeApi(recorded_answers(window="1m")) as api:
        status, out, err = invoke(["status", "--prometheus", api.url, "--json"])
    assert status == 0 and err == ""
    doc = json.loads(out)
    assert doc["prometheus"] == api.url and doc["window"] == "1m"
    assert sorted(g["name"] for g in doc["groups"]) == ["tcp-7001", "tcp-7002", "tcp-7003"]
    for g in doc["groups"]:
        assert set(g) == {"instance", "exporter_up", *json_docs.FLEET_GROUP_KEYS, "unmanaged_listeners", "members"}
        assert g["instance"].startswith("127.0.0.1:") and g["unmanaged_listeners"] == 0 and g["exporter_up"]
        for m in g["members"]:
            assert set(m) == set(json_docs.FLEET_KEYS) | {"rate"}
            assert m["state"] == "active" and m["rate"] > 0 and 0 < m["observed_share"] < 1


def test_status_through_prometheus_json_says_adaptive_and_throttled():
    from rpctl.controller.read.prometheus_source import THROTTLED_REASON

    from tests.support.prometheus import FakeApi, recorded_answers, throttling_docs

    with FakeApi(recorded_answers(docs=throttling_docs("tcp-7001", "a1"))) as api:
        status, out, err = invoke(["status", "--prometheus", api.url, "--json"])
    assert status == 0 and err == ""
    groups = {g["name"]: g for g in json.loads(out)["groups"]}
    assert {name: g["adaptive"] for name, g in groups.items()} == {
        "tcp-7001": True, "tcp-7002": False, "tcp-7003": False}
    assert [(m["name"], m["state"], m["throttled"]) for m in groups["tcp-7001"]["members"]] == [
        ("a0", "active", None), ("a1", "throttled", THROTTLED_REASON), ("a2", "active", None)]
    assert all(m["throttled"] is None for g in ("tcp-7002", "tcp-7003") for m in groups[g]["members"])


def test_status_through_prometheus_fits_80_columns(monkeypatch):
    from tests.support.prometheus import FakeApi, recorded_answers

    monkeypatch.setenv("COLUMNS", "80")
    with FakeApi(recorded_answers(window="1m")) as api:
        status, out, err = invoke(["status", "--prometheus", api.url])
    assert status == 0 and err == ""
    assert "observed 1m" in out and "conn/s" in out
    assert all(len(line.rstrip()) <= 80 for line in out.splitlines())
    assert sum(line.startswith("127.0.0.1:") for line in out.splitlines()) == 3  # a title per instance and group


def test_status_through_prometheus_errors_are_one_line_with_their_code():
    from tests.support.prometheus import FakeApi

    bad = json.dumps({"status": "error", "errorType": "bad_data", "error": "parse error"}).encode()
    with FakeApi(lambda expr: (400, bad)) as api:
        status, _, err = invoke(["status", "--prometheus", api.url, "--match", "{a==b}"])
    assert status == 4 and "--match is not a valid selector (parse error)" in assert_one_error_line(err)
    with FakeApi(lambda expr: (404, b"no")) as api:
        status, _, err = invoke(["status", "--prometheus", api.url])
    assert status == 4 and "--prometheus" in assert_one_error_line(err)
    empty = json.dumps({"status": "success", "data": {"resultType": "vector", "result": []}}).encode()
    with FakeApi(lambda expr: (200, empty)) as api:
        status, _, err = invoke(["status", "--prometheus", api.url])
    assert status == 3 and "no rpctl series" in assert_one_error_line(err)
    status, _, err = invoke(["status", "--prometheus", "http://127.0.0.1:9", "--window", "10"])
    assert status == 4 and "--window '10'" in assert_one_error_line(err)
    status, _, err = invoke(["status", "--window", "5m"])
    assert status == 2 and "need --prometheus" in assert_one_error_line(err)
    status, _, err = invoke(["status", "--prometheus", "http://127.0.0.1:9", "--group", "web"])
    assert status == 2 and "--match" in assert_one_error_line(err)
