"""`rpctl run` in-process: the command line reaches the launcher as given; its exit is rpctl's.

The launcher is replaced here; launching real children is tests/kernel/test_run_and_join_workers.py.
"""

from __future__ import annotations

import pytest
from rpctl.controller.ops import launcher
from rpctl.controller.store.options import GroupOptions

from tests.support.cli import assert_one_error_line, invoke

pytestmark = pytest.mark.usefixtures("cli_without_system")


class FakeLauncher:
    made: list = []

    def __init__(self, group, count, cmd, **kw):
        FakeLauncher.made.append((group, count, cmd, {k: v for k, v in kw.items() if k != "log"}))

    def run(self) -> int:
        return 0


@pytest.fixture
def fake(monkeypatch):
    FakeLauncher.made = []
    monkeypatch.setattr(launcher, "Launcher", FakeLauncher)
    return FakeLauncher.made


def test_options_and_the_command_after_double_dash_reach_the_launcher(fake):
    status, _, err = invoke(["run", "-g", "web", "-n", "3", "--name", "api-{i}", "--listen", "[::1]:9090",
                             "--proto", "udp", "--weight", "2", "--flow-idle-timeout", "5", "--no-flow-affinity",
                             "--", "./srv", "--id", "$RPCTL_MEMBER", "-v"])
    assert (status, err) == (0, "")
    assert fake == [("web", 3, ["./srv", "--id", "$RPCTL_MEMBER", "-v"],
                     {"name_format": "api-{i}", "listen": "[::1]:9090", "proto": "udp", "weight": 2,
                      "options": GroupOptions(False, None, 5.0)})]


def test_defaults(fake):
    assert invoke(["run", "-n", "1", "--", "./srv"])[0] == 0
    (group, count, cmd, kw) = fake[0]
    assert (group, count, cmd) == (None, 1, ["./srv"])
    assert kw == {"name_format": "worker-{i}", "listen": "127.0.0.1:8080", "proto": "tcp", "weight": 1,
                  "options": GroupOptions()}


def test_quic_options_reach_the_launcher(fake):
    assert invoke(["run", "-n", "4", "--proto", "udp", "--quic", "--", "./srv"])[0] == 0
    assert fake[0][3]["options"] == GroupOptions(quic=True)
    assert invoke(["run", "-n", "4", "--proto", "udp", "--quic", "--quic-server-id-length", "3", "--", "./srv"])[0] == 0
    assert fake[1][3]["options"] == GroupOptions(quic=True, quic_server_id_length=3)


def test_count_is_required(fake):
    status, _, err = invoke(["run", "--", "./srv"])
    assert status == 2 and "required: -n" in assert_one_error_line(err)
    assert fake == []
