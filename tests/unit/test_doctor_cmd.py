"""`rpctl doctor` in-process: its table, its JSON, and exit 6 only when a check fails."""

from __future__ import annotations

import json

import pytest
from rpctl.controller import probe
from rpctl.controller.errors import ExitStatus
from rpctl.controller.probe import Check
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
