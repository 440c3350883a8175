"""rpctl cleanup: the state folder of a namespace that no longer exists goes; the
folders of the current namespace, of one held by a bind mount and of one held
only by an open file descriptor stay."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from rpctl.controller.store.state import Layout

from tests.support.netns import drop_netns, namespace_with_a_group, run_in, unload_all

pytestmark = pytest.mark.kernel


def test_cleanup_removes_only_folders_of_namespaces_that_are_gone(netns, rpctl, make_members):
    members = make_members()
    rpctl.ok(*members.register_args("a", members.add()))
    here = Layout().ns_dir
    tag = f"{os.getpid()}-{id(netns) % 10_000}"
    live, gone, held = f"rpctl-live{tag}", f"rpctl-gone{tag}", f"rpctl-held{tag}"
    folders = {}
    held_fd = None
    try:
        folders = {ns: namespace_with_a_group(ns) for ns in (live, gone, held)}
        held_fd = os.open(f"/run/netns/{held}", os.O_RDONLY)
        drop_netns(gone)
        drop_netns(held)  # its bind mount goes; this process's fd keeps it alive
        assert all(os.path.isdir(d) for d in folders.values())

        doc = json.loads(rpctl.ok("cleanup", "--dry-run", "--json"))
        listed = {f["path"]: f for f in doc["folders"]}
        assert doc["dry_run"] is True
        assert folders[gone] in listed and listed[folders[gone]]["groups"] == ["tcp-7000"]
        assert not {here, folders[live], folders[held]} & set(listed), listed
        assert all(os.path.isdir(d) for d in folders.values()), "--dry-run removed something"
        text = rpctl.ok("cleanup", "--dry-run")
        assert f"would remove {folders[gone]}: " in text

        out = rpctl.ok("cleanup")
        assert f"removed {folders[gone]}: {os.path.basename(folders[gone])} (groups tcp-7000)" in out
        assert not os.path.exists(folders[gone])
        assert all(os.path.isdir(d) for d in (here, folders[live], folders[held]))
        assert json.loads(rpctl.ok("status", "--json"))["groups"][0]["name"] == "tcp-7000"

        # Once the last fd to it closes, the held namespace is gone too.
        os.close(held_fd)
        held_fd = None
        code, out, err = rpctl("cleanup")
        assert code == 0 and f"removed {folders[held]}" in out, (code, out, err)
        assert os.path.isdir(here) and os.path.isdir(folders[live])
    finally:
        if held_fd is not None:
            os.close(held_fd)
        if live in folders:
            run_in(live, unload_all)
        for ns in (live, gone, held):
            drop_netns(ns)
            if ns in folders:
                shutil.rmtree(folders[ns], ignore_errors=True)


def test_a_folder_whose_group_holds_a_socket_is_kept_even_when_its_namespace_is_unseen(
        netns, make_members, monkeypatch):
    """The safety net behind every scan: a socket keeps its namespace alive, so a group
    with a member socket proves its namespace exists, whatever the scan missed."""
    from rpctl.controller.store import stale_state

    members = make_members()
    members.add()
    members.register_all()
    monkeypatch.setattr(stale_state, "live_netns_ids", lambda unreadable=None: set())
    assert Layout().ns_dir not in {f.path for f in stale_state.stale_folders()}
    members.close()  # the last member socket closed: nothing proves the namespace any more
    assert Layout().ns_dir in {f.path for f in stale_state.remove_stale(dry_run=True)}
