"""contrib/systemd/rpctl.service passes `systemd-analyze verify` and runs `rpctl serve` as a notify service."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "contrib" / "systemd" / "rpctl.service"
INSTALLED = "/usr/bin/rpctl"  # the Debian package's


def _keys(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_the_unit_is_a_notify_service_that_reloads_with_sighup():
    keys = _keys(UNIT.read_text())
    assert keys["Type"] == ["notify"]
    assert keys["ExecStart"][0].split()[:2] == [INSTALLED, "serve"]
    assert "-HUP" in keys["ExecReload"][0]
    assert keys["Restart"] == ["on-failure"]
    assert "network-online.target" in keys["After"][0]
    assert "CAP_BPF" in keys["CapabilityBoundingSet"][0].split()
    assert keys["WantedBy"] == ["multi-user.target"]


def test_systemd_analyze_verify_accepts_it(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is missing: apt-get install systemd (./scripts/provision.sh --with-tests)")
    # verify checks that ExecStart's program exists: point it at this
    # checkout's rpctl instead of the installed one the unit names.
    rpctl = Path(sys.executable).with_name("rpctl")
    assert rpctl.exists(), f"{rpctl}: the virtualenv has no rpctl script (pip install -e .)"
    unit = tmp_path / "rpctl.service"
    unit.write_text(UNIT.read_text().replace(INSTALLED, str(rpctl)))
    r = subprocess.run([analyze, "verify", str(unit)], check=False, capture_output=True, text=True,
                       env=dict(os.environ, SYSTEMD_LOG_LEVEL="warning"))
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr
