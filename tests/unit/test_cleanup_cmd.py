"""`rpctl cleanup` in-process: what it removes or would remove, its JSON, exit 0 when nothing to do."""

from __future__ import annotations

import json

import pytest
from rpctl.controller.contract.errors import PermissionDenied
from rpctl.controller.store import stale_state
from rpctl.controller.store.stale_state import StaleFolder

from tests.support.cli import assert_one_error_line, invoke

pytestmark = pytest.mark.usefixtures("cli_without_system")

GONE = [StaleFolder("netns4097", "/sys/fs/bpf/rpctl/netns4097", ["api", "web"]),
        StaleFolder("net4026532001", "/sys/fs/bpf/rpctl/net4026532001", [])]


@pytest.fixture
def calls(monkeypatch):
    seen = []

    def remove_stale(dry_run=False, root=None):
        seen.append(dry_run)
        return GONE

    monkeypatch.setattr(stale_state, "remove_stale", remove_stale)
    return seen


def test_removed_folders_are_one_line_each(calls):
    status, out, err = invoke(["cleanup"])
    assert (status, err, calls) == (0, "", [False])
    assert out.splitlines() == [
        "removed /sys/fs/bpf/rpctl/netns4097: netns4097 (groups api, web)",
        "removed /sys/fs/bpf/rpctl/net4026532001: net4026532001 (no group)",
    ]


def test_dry_run_says_would_and_json_has_every_folder(calls):
    status, out, _ = invoke(["cleanup", "--dry-run"])
    assert status == 0 and calls == [True]
    assert out.startswith("would remove /sys/fs/bpf/rpctl/netns4097: ")
    status, out, _ = invoke(["cleanup", "--dry-run", "--json"])
    assert status == 0 and json.loads(out) == {"dry_run": True, "folders": [
        {"netns": "netns4097", "path": "/sys/fs/bpf/rpctl/netns4097", "groups": ["api", "web"]},
        {"netns": "net4026532001", "path": "/sys/fs/bpf/rpctl/net4026532001", "groups": []},
    ]}


def test_nothing_to_do_is_exit_0(monkeypatch):
    monkeypatch.setattr(stale_state, "remove_stale", lambda dry_run=False, root=None: [])
    status, out, _ = invoke(["cleanup"])
    assert status == 0 and out.startswith("nothing to clean up")


def test_not_seeing_every_namespace_is_exit_5(monkeypatch):
    def refuse(dry_run=False, root=None):
        raise PermissionDenied("tell which state folders are stale: enter ...: Operation not permitted (run as root)")

    monkeypatch.setattr(stale_state, "remove_stale", refuse)
    status, _, err = invoke(["cleanup", "--dry-run"])
    assert status == 5 and "run as root" in assert_one_error_line(err)
