"""`rpctl doctor` in-process: its table, its JSON, and exit 6 only when a check fails."""

from __future__ import annotations

import json

import pytest
from rpctl.controller.contract.errors import ExitStatus
from rpctl.controller.kernel import probe
from rpctl.controller.kernel.probe import Check

from tests.support.cli import invoke

pytestmark = pytest.mark.usefixtures("cli_without_system")

CHECKS = [
    Check("kernel", True, "Linux 6.18"),
    Check("migration", False, "kernel 5.10 < 5.14", fix="use Linux 5.14+", warning=True),
    Check("headers", False, "no kernel header tree", fix="apt-get install linux-headers-amd64"),
]


def test_a_failed_check_is_exit_6_with_its_fix(monkeypatch):
    monkeypatch.setattr(probe, "run_checks", lambda: CHECKS)
    status, out, err = invoke(["doctor"])
    assert status == ExitStatus.UNSUPPORTED == 6 and err == ""
    text = " ".join(out.split())
    assert "FAIL" in text and "apt-get install linux-headers-amd64" in text and "warn" in text


def test_warnings_alone_pass_and_json_has_every_check(monkeypatch):
    monkeypatch.setattr(probe, "run_checks", lambda: CHECKS[:2])
    status, out, _ = invoke(["doctor", "--json"])
    assert status == 0
    doc = json.loads(out)
    assert [c["name"] for c in doc["checks"]] == ["kernel", "migration"]
    assert doc["checks"][1] == {"name": "migration", "ok": False, "warning": True, "detail": "kernel 5.10 < 5.14",
                                "fix": "use Linux 5.14+"}


def test_state_checks_name_unmanaged_listeners_and_stale_folders(monkeypatch):
    from rpctl.controller.read import views
    from rpctl.controller.store import stale_state
    from rpctl.controller.store.stale_state import StaleFolder

    from tests.support.views import group_view, strays

    monkeypatch.setattr(probe, "run_checks", lambda: [Check("bpffs", True, "mounted at /sys/fs/bpf")])
    monkeypatch.setattr(views, "read_views", lambda: [group_view(unmanaged=strays((123, "nc"))),
                                                      group_view(name="quiet")])
    monkeypatch.setattr(stale_state, "stale_folders",
                        lambda: [StaleFolder("netns4097", "/sys/fs/bpf/rpctl/netns4097", ["web"])])
    status, out, _ = invoke(["doctor", "--json"])
    assert status == 0, "warnings only"
    checks = {c["name"]: c for c in json.loads(out)["checks"]}
    assert checks["group tcp-18080"]["warning"] and not checks["group tcp-18080"]["ok"]
    assert checks["group tcp-18080"]["detail"].startswith("1 unmanaged listener on tcp:127.0.0.1:18080: pid 123 (nc)")
    assert checks["group quiet"]["ok"]
    assert checks["state folders"] == {
        "name": "state folders", "ok": False, "warning": True, "fix": "rpctl cleanup",
        "detail": "1 folder of network namespaces that no longer exist: netns4097 (groups web)"}


def test_state_is_not_read_without_bpffs(monkeypatch):
    monkeypatch.setattr(probe, "run_checks", lambda: CHECKS[:2])
    status, out, _ = invoke(["doctor", "--json"])
    assert [c["name"] for c in json.loads(out)["checks"]] == ["kernel", "migration"]
