"""controller/store/stale_state.py without the system: which folders are stale, what is removed."""

from __future__ import annotations

import errno
import os

import pytest
from hypothesis import example, given
from rpctl.controller.contract.errors import PermissionDenied
from rpctl.controller.store import stale_state

from tests.support import hostile

MOUNTINFO = """\
22 1 0:21 / /proc rw,nosuid - proc proc rw
45 43 0:4 net:[4026532177] /run/netns/web rw shared:3 - nsfs nsfs rw
46 43 0:4 net:[4026532198] /run/netns/two\\040words rw shared:2 - nsfs nsfs rw
47 43 0:4 mnt:[4026532200] /run/mnt-ns rw - nsfs nsfs rw
"""


def test_net_namespace_mounts_of_a_mountinfo():
    assert stale_state.net_namespace_mounts(MOUNTINFO) == ["/run/netns/web", "/run/netns/two words"]


@given(hostile.proc_text(MOUNTINFO, MOUNTINFO.replace("/run/netns/web", "/run/netns/ÿ\\134þ")))
@example("- nsfs")  # found by the fuzz profile: a line cut short before its mount point
def test_any_mountinfo_gives_mount_points(text):
    assert all(isinstance(p, str) for p in stale_state.net_namespace_mounts(text))


@pytest.fixture
def root(tmp_path):
    for path in ("rpctl/netns1/web", "rpctl/netns2/api", "rpctl/netns2/_tmp-x-1", "rpctl/net4026532001",
                 "rpctl/notanamespace/web"):
        os.makedirs(tmp_path / path)
    return str(tmp_path)


def test_folders_of_namespaces_not_found_are_stale_and_removed(root, monkeypatch):
    monkeypatch.setattr(stale_state, "live_netns_ids", lambda unreadable=None: {"netns1"})
    found = stale_state.remove_stale(dry_run=True, root=root)
    assert [(f.netns, f.groups) for f in found] == [("net4026532001", []), ("netns2", ["api"])]
    assert os.path.isdir(os.path.join(root, "rpctl/netns2"))
    removed = stale_state.remove_stale(root=root)
    assert removed == found
    assert sorted(os.listdir(os.path.join(root, "rpctl"))) == ["netns1", "notanamespace"]


def test_a_namespace_that_cannot_be_entered_is_permission_denied(root, monkeypatch):
    def refuse(unreadable=None):
        raise stale_state.IncompleteScan("enter the network namespace of /proc/9/ns/net: not permitted", errno.EPERM)

    monkeypatch.setattr(stale_state, "live_netns_ids", refuse)
    with pytest.raises(PermissionDenied):
        stale_state.stale_folders(root)
    assert sorted(os.listdir(os.path.join(root, "rpctl"))) == [
        "net4026532001", "netns1", "netns2", "notanamespace"]


def test_no_folder_needs_no_scan(tmp_path, monkeypatch):
    monkeypatch.setattr(stale_state, "live_netns_ids", lambda unreadable=None: pytest.fail("scanned"))
    assert stale_state.stale_folders(str(tmp_path)) == []
