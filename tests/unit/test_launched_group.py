"""controller/ops/launched_group.py without a kernel: when a launcher's group goes with it.

Taking a group over (every member of it gone) on the real kernel is
tests/kernel/test_close_the_terminal_of_a_run.py.
"""

from __future__ import annotations

from rpctl.controller.ops import launched_group
from rpctl.controller.ops.launched_group import LaunchedGroup
from rpctl.controller.read import views as read_model
from rpctl.controller.store.options import GroupOptions

from tests.support.views import group_view, member


def unloads(monkeypatch, members, created: bool = True) -> list:
    """What unload_if_created_and_empty() unloads when the group has `members` left."""
    monkeypatch.setattr(read_model, "read_view", lambda name, with_queues=True: group_view(members=members))
    unloaded = []
    monkeypatch.setattr(launched_group, "unload", lambda group: unloaded.append(group))
    g = LaunchedGroup("web", 1, GroupOptions())
    g.created = created
    g.unload_if_created_and_empty()
    return unloaded


def test_the_launchers_own_group_goes_when_no_live_member_is_left(monkeypatch):
    assert unloads(monkeypatch, []) == ["web"]
    # A member whose socket is gone steers nothing (a killed launcher's, say): it does not keep the group.
    assert unloads(monkeypatch, [member(0, "worker-3", gone=True)]) == ["web"]


def test_a_live_member_of_someone_else_keeps_the_group(monkeypatch):
    assert unloads(monkeypatch, [member(0, "worker-3", gone=True), member(1, "canary")]) == []


def test_a_group_the_launcher_neither_made_nor_took_over_stays(monkeypatch):
    assert unloads(monkeypatch, [], created=False) == []
