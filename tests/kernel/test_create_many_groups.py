"""Many groups on one program (store/shared_program.py) on the real kernel:
each group an entry program and a slot of the shared program; slots made in
batches, taken clean, freed by unload and by cleanup; the shared program
gone with its last group."""

from __future__ import annotations

import errno
import os
import subprocess
import time

import pytest
from rpctl.controller.contract import abi
from rpctl.controller.kernel import bpfsys
from rpctl.controller.kernel.bpffs import bpffs_root
from rpctl.controller.store import group, shared_program
from rpctl.controller.store.generation import Group
from rpctl.controller.store.options import GroupOptions
from rpctl.controller.store.state import Layout

from tests.support.netns import namespace_with_a_group
from tests.support.traffic import UdpFlows, moved, tcp_connections, udp_datagrams

pytestmark = pytest.mark.kernel


def slot_of(group: str) -> int:
    with Group.open(group) as g:
        ctl = g.ctl()
    assert ctl.flags & abi.RP_CTL_SHARED, "a new group runs on the shared program"
    return ctl.slot


def owners(folder: str) -> dict[int, int]:
    """Slot -> program id of the group that holds it, of the taken slots of shared program `folder`."""
    return {slot: owner for where, slot, owner in shared_program.taken(bpffs_root()) if where == folder}


def gone(prog_id: int, within: float = 5.0) -> bool:
    """Whether program `prog_id` has left the kernel (freed after an RCU grace period)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.close(bpfsys.prog_get_fd_by_id(prog_id))
        except bpfsys.BpfError as e:
            if e.errno == errno.ENOENT:
                return True
            raise
        time.sleep(0.05)
    return False


def test_groups_share_one_program_and_each_steers_by_its_own_slot(netns, rpctl, make_members, own_shared_program):
    # More groups than the first batch of slots: slots are made again while groups live.
    groups = []
    for port in range(7100, 7100 + shared_program.FIRST_BATCH * 2 + 3):
        members = make_members(port=port)
        members.add()
        members.add()
        groups.append((members.register_all(prefix=f"p{port}-"), members))
    folder = own_shared_program
    slots = [slot_of(name) for name, _ in groups]
    assert len(set(slots)) == len(slots), "two groups share a slot"
    entries = {shared_program.program_of(Layout().group_dir(name)) for name, _ in groups}
    assert len(entries) == len(groups) and set(owners(folder).values()) == entries

    # Drain one member of every other group: only that group's traffic moves.
    for i, (name, _) in enumerate(groups):
        if i % 2:
            rpctl.ok("drain", f"p{7100 + i}-0", "--group", name)
    for i, (name, members) in enumerate(groups):
        counts, failures = tcp_connections(members, 60, seed=i)
        assert failures == 0, name
        if i % 2:
            assert counts[0] == 0 and counts[1] == 60, (name, dict(counts))
        else:
            assert counts[0] > 5 and counts[1] > 5, (name, dict(counts))

    fd = bpfsys.obj_get(os.path.join(folder, "prog"))
    shared_id = bpfsys.prog_info(fd).id
    os.close(fd)
    for name, _ in groups:
        rpctl.ok("unload", "--group", name)
    assert not os.path.exists(folder), "the shared program outlived its last group"
    assert all(gone(e) for e in entries) and gone(shared_id), "a program stayed in the kernel"


def test_a_freed_slot_serves_its_next_group_from_clean_maps(netns, rpctl, make_members, own_shared_program):
    first = make_members(port=7201)
    for _ in range(3):
        first.add()
    a = first.register_all(prefix="a")
    rpctl.ok("drain", "a0", "--group", a)
    counts, failures = tcp_connections(first, 300, seed=1)
    assert failures == 0 and counts[0] == 0
    slot = slot_of(a)
    keep = make_members(port=7202)  # keeps the shared program loaded
    keep.add()
    keep.register_all(prefix="k")
    rpctl.ok("unload", "--group", a)
    assert slot not in owners(own_shared_program)

    second = make_members(port=7203)
    second.add()
    b = second.register_all(prefix="b")
    assert slot_of(b) == slot, "the free slot was not taken again"
    with Group.open(b) as g:
        totals = [sum(row.values()) for row in g.member_totals()]
        assert sum(totals) == 0, "the slot's counters were not cleared"
        assert [i for i in range(abi.RP_MAX_MEMBERS) if g.socket_cookie(i) is not None] == [0]
        assert g.ctl().port == 7203
    counts, failures = tcp_connections(second, 200, seed=2)
    assert failures == 0 and counts[0] == 200
    # The first group's sockets went back to the kernel's own selection.
    counts, failures = tcp_connections(first, 300, seed=3)
    assert failures == 0 and counts[0] > 30


def test_a_flow_table_of_another_size_is_swapped_into_the_slot(netns, make_members):
    members = make_members(proto="udp", port=7301)
    for _ in range(3):
        members.add()
    name = members.register_all(options=GroupOptions(flow_affinity=True, flow_table_size=4096))
    with Group.open(name) as g:
        assert bpfsys.map_info(g.maps["flows"].fd).max_entries == 4096 // abi.RP_FLOW_WAYS
    flows = UdpFlows(members, 200, seed=4)
    try:
        before = flows.placements()
        # Flows stay on their member through a drain (the flow table holds them);
        # new work avoids the drained member.
        group.set_draining("w0", True, group=name)
        assert moved(before, flows.placements()) == 0
        counts = udp_datagrams(members, 300, seed=5)
        assert counts[0] == 0 and sum(counts.values()) == 300, dict(counts)
    finally:
        flows.close()


def test_cleanup_frees_the_slots_of_a_dead_namespaces_groups(netns, rpctl, make_members, own_shared_program):
    keep = make_members(port=7401)
    keep.add()
    keep.register_all()
    name = "rpctl-shared-gone"
    folder = namespace_with_a_group(name)
    taken = set(owners(own_shared_program))
    subprocess.run(["ip", "netns", "del", name], check=True)
    rpctl.ok("cleanup")
    assert not os.path.exists(folder)
    assert len(owners(own_shared_program)) == len(taken) - 1, "the dead namespace's group kept its slot"
