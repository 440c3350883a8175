"""controller/ops/launcher.py without children: what a launcher decides before it starts any.

Starting, registering and restarting real children is tests/kernel/test_run_and_join_workers.py
and tests/kernel/test_route_quic_connections.py.
"""

from __future__ import annotations

import sys

import pytest
from rpctl.controller.contract.errors import InvalidInput
from rpctl.controller.ops.launcher import Launcher, Member
from rpctl.controller.store.options import GroupOptions

from tests.support.views import member

QUIC_GROUP = GroupOptions(True, 65536, 30.0, True, 1)


def launcher(count: int = 4, **kw) -> Launcher:
    run = Launcher("h3", count, [sys.executable], proto="udp", **kw)
    run.members = [Member(name, sock=None, backoff=0.5) for name in run.names]
    return run


def test_a_new_quic_group_numbers_its_members_from_zero():
    run = launcher(options=GroupOptions(quic=True))
    run.group.assign_quic_ids(run.members, QUIC_GROUP, [])
    assert [m.quic_server_id for m in run.members] == ["00", "01", "02", "03"]


def test_members_keep_their_ids_and_new_ones_take_free_ones():
    """A launcher that takes over members (their sockets gone) gives their children the
    ids they had; the others get ids no present member has."""
    run = launcher(3)
    present = [member(0, "worker-2", quic_server_id="05"), member(1, "api-1", quic_server_id="00"),
               member(2, "api-2", quic_server_id="02")]
    run.group.assign_quic_ids(run.members, QUIC_GROUP, present)
    assert [m.quic_server_id for m in run.members] == ["01", "05", "03"]


def test_longer_ids_and_groups_without_quic():
    run = launcher(2)
    run.group.assign_quic_ids(run.members, GroupOptions(True, 65536, 30.0, True, 2), [])
    assert [m.quic_server_id for m in run.members] == ["0000", "0001"]
    run = launcher(2)
    run.group.assign_quic_ids(run.members, GroupOptions(True, 65536, 30.0, False, 0), [])
    assert [m.quic_server_id for m in run.members] == [None, None]


def test_quic_routing_of_a_tcp_run_is_refused_before_anything_starts():
    with pytest.raises(InvalidInput, match="QUIC routing is for UDP groups"):
        Launcher("web", 2, [sys.executable], proto="tcp", options=GroupOptions(quic=True))
