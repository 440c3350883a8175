"""controller/ops/reconcile.py's plan(): what makes a group match its spec (pure, no kernel)."""

from __future__ import annotations

import socket

import pytest
from rpctl.controller.contract.errors import ExitStatus, InvalidInput, StateError
from rpctl.controller.kernel.sockets import EndpointKey
from rpctl.controller.ops.config import AdoptRule, GroupSpec, PinSpec, RunSpec
from rpctl.controller.ops.reconcile import (Add, Candidate, Current, Observed, Plan, Refresh, Remove, Reweigh, plan,
                                           without_refused_pin)
from rpctl.controller.store.options import GroupOptions

KEY = EndpointKey("tcp", socket.AF_INET, "127.0.0.1", 8080)


def _spec(**kw) -> GroupSpec:
    return GroupSpec(**{"name": "web", "listen": KEY, "adopt": AdoptRule(comm="nginx"), **kw})


def _lst(cookie: int, pid: int, fd: int = 6, comm: str = "nginx") -> Candidate:
    return Candidate(cookie, cookie + 1000, pid, fd, comm, "/usr/sbin/nginx", 33, "/", (1, pid))


def _member(index: int, cookie: int, pid: int, weight: int = 1, draining: bool = False, open: bool = True,
            fd: int = 6) -> Current:
    return Current(index, f"nginx-{index + 1}", cookie, pid, fd, weight, draining, open)


def _nginx(pids=(101, 102, 103)) -> Observed:
    """nginx with one listener per worker (cookies 1, 2, 3), all members nginx-1..3."""
    return Observed("web", KEY, True, tuple(_lst(i + 1, pid) for i, pid in enumerate(pids)),
                    tuple(_member(i, i + 1, pid) for i, pid in enumerate(pids)))


def test_nothing_to_do_is_an_empty_plan():
    p = plan(_spec(), _nginx())
    assert p.empty and p.lines() == ["group web: up to date"]


def test_a_new_group_is_created_with_every_matching_listener():
    obs = Observed("web", KEY, False, (_lst(1, 101), _lst(2, 102)))
    p = plan(_spec(), obs)
    assert p.create and [a.name for a in p.adds] == ["nginx-1", "nginx-2"]
    assert p.lines() == [
        "group web: create it for tcp:127.0.0.1:8080",
        "group web: + nginx-1 (pid 101 nginx fd 6, weight 1)",
        "group web: + nginx-2 (pid 102 nginx fd 6, weight 1)",
    ]


def test_no_listener_and_no_group_is_nothing_to_do():
    p = plan(_spec(), Observed("web", KEY, False))
    assert p.empty and not p.create and p.lines() == ["group web: up to date (no member yet)"]


def test_a_reload_with_the_same_count_refreshes_pids_and_keeps_names():
    obs = _nginx()
    reloaded = Observed("web", KEY, True, tuple(_lst(i + 1, 201 + i) for i in range(3)), obs.members)
    p = plan(_spec(), reloaded)
    assert p.refreshes == tuple(Refresh(f"nginx-{i + 1}", i, 201 + i, 6, 101 + i) for i in range(3))
    assert not p.adds and not p.removes and not p.empty
    assert p.lines()[0] == "group web: nginx-1 pid 101 -> 201 (same socket, fd 6)"


def test_a_reload_to_one_more_worker_adds_the_next_name():
    obs = _nginx()
    grown = Observed("web", KEY, True, (*obs.listeners, _lst(4, 104)), obs.members)
    p = plan(_spec(), grown)
    assert p.adds == (Add("nginx-4", 4, 104, 6, "nginx", 1, False),)
    assert p.lines() == ["group web: + nginx-4 (pid 104 nginx fd 6, weight 1)"]


def test_a_reload_to_one_less_removes_the_closed_socket_and_frees_its_name():
    obs = _nginx()
    closed = Observed("web", KEY, True, obs.listeners[:2],
                      (*obs.members[:2], _member(2, 3, 103, open=False)))
    p = plan(_spec(), closed)
    assert p.removes == (Remove("nginx-3", 2, "socket closed"),)
    assert p.lines() == ["group web: - nginx-3 (socket closed)"]
    # Up to three again: the new listener takes the freed name.
    regrown = Observed("web", KEY, True, (*obs.listeners[:2], _lst(9, 109)), obs.members[:2])
    assert [a.name for a in plan(_spec(), regrown).adds] == ["nginx-3"]


def test_a_process_that_no_longer_matches_the_rule_leaves_and_one_that_never_did_is_not_admitted():
    obs = _nginx()
    changed = Observed("web", KEY, True, (obs.listeners[0], obs.listeners[1], _lst(3, 555, comm="python3"),
                                          _lst(4, 556, comm="python3")), obs.members)
    p = plan(_spec(), changed)
    assert p.removes == (Remove("nginx-3", 2, "pid 555 python3: comm 'python3' is not 'nginx'"),)
    assert not p.adds
    assert [(u.cookie, u.pid, u.reason) for u in p.unmanaged] == [
        (3, 555, "comm 'python3' is not 'nginx'"), (4, 556, "comm 'python3' is not 'nginx'")]
    assert "group web: not admitted: socket 4 of pid 556 python3 (comm 'python3' is not 'nginx')" in p.lines()


def test_a_listener_whose_server_cannot_be_told_apart_is_not_admitted_and_a_member_keeps_its_record():
    obs = _nginx()
    ambiguous = Candidate(1, 1001, holders=(1, 101, 201))
    unknown = Candidate(7, 1007, holders=(1, 201, 202))
    p = plan(_spec(), Observed("web", KEY, True, (ambiguous, *obs.listeners[1:], unknown), obs.members))
    assert p.empty
    assert [u.reason for u in p.unmanaged] == ["cannot tell which of pids 1,201,202 serves it"]


def test_weights_and_drains_apply_by_name_and_others_get_the_default():
    spec = _spec(weights={"nginx-1": 3, "nginx-9": 2}, drain=("nginx-2",), default_weight=2)
    p = plan(spec, _nginx())
    assert p.reweighs == (Reweigh("nginx-1", 0, 3, False, 1, False), Reweigh("nginx-2", 1, 2, True, 1, False),
                          Reweigh("nginx-3", 2, 2, False, 1, False))
    assert p.unknown_names == ("nginx-9",)
    assert p.lines() == [
        "group web: nginx-1 weight 1 -> 3",
        "group web: nginx-2 weight 1 -> 2",
        "group web: drain nginx-2",
        "group web: nginx-3 weight 1 -> 2",
        "group web: no member named nginx-9 yet (weights and drain apply when one is)",
    ]
    # A member drained by hand comes back when the file does not drain it.
    drained = Observed("web", KEY, True, _nginx().listeners, (_member(0, 1, 101, draining=True),
                                                              *_nginx().members[1:]))
    assert plan(_spec(), drained).lines() == ["group web: undrain nginx-1"]
    # A newcomer gets its weight and drain flag from the file at once.
    grown = Observed("web", KEY, True, (*_nginx().listeners, _lst(4, 104)), _nginx().members)
    spec = _spec(weights={"nginx-4": 5}, drain=("nginx-4",))
    assert plan(spec, grown).adds == (Add("nginx-4", 4, 104, 6, "nginx", 5, True),)


def test_pin_mode_changes_and_is_computed_again_when_members_change():
    p = plan(_spec(pin=PinSpec("cpu")), _nginx())
    assert p.pin == PinSpec("cpu") and p.lines() == ["group web: pin cpu (was weighted)"]
    pinned = Observed("web", KEY, True, _nginx().listeners, _nginx().members, PinSpec("cpu"))
    assert plan(_spec(pin=PinSpec("cpu")), pinned).empty
    grown = Observed("web", KEY, True, (*pinned.listeners, _lst(4, 104)), pinned.members, PinSpec("cpu"))
    p = plan(_spec(pin=PinSpec("cpu")), grown)
    assert p.pin == PinSpec("cpu") and p.pids == {"nginx-1": 101, "nginx-2": 102, "nginx-3": 103, "nginx-4": 104}
    assert p.lines()[-1] == "group web: pin cpu (members changed)"
    assert plan(_spec(), pinned).lines() == ["group web: pin weighted (was cpu)"]
    rss = plan(_spec(pin=PinSpec("rss", "eth0")), pinned)
    assert rss.lines() == ["group web: pin rss:eth0 (was cpu)"]


def test_a_run_group_is_left_to_serve():
    p = plan(_spec(adopt=None, run=RunSpec(("x",), 2)), _nginx())
    assert p.empty and p.kept_by_serve
    assert p.lines() == ["group web: kept by rpctl serve (its members are launched by `run`)"]


def test_a_format_without_i_that_collides_is_refused():
    one_process = Observed("web", KEY, False, (_lst(1, 101, fd=5), _lst(2, 101, fd=6)))
    with pytest.raises(InvalidInput, match=r"key 'names' '\{comm\}-\{pid\}' gives 'nginx-101' to two listeners"):
        plan(_spec(names="{comm}-{pid}"), one_process)
    assert [a.name for a in plan(_spec(), one_process).adds] == ["nginx-1", "nginx-2"]


def test_plan_is_a_value():
    assert isinstance(plan(_spec(), _nginx()), Plan)


UDP = EndpointKey("udp", socket.AF_INET, "127.0.0.1", 5353)


def test_a_new_group_is_created_with_the_files_options():
    spec = _spec(listen=UDP, options=GroupOptions(flow_affinity=False))
    p = plan(spec, Observed("web", UDP, False, (_lst(1, 101),)))
    assert p.create and p.options == GroupOptions(flow_affinity=False)
    assert p.lines()[0] == "group web: create it for udp:127.0.0.1:5353 with flow_affinity off"
    assert plan(spec, Observed("web", UDP, True, (_lst(1, 101),), (_member(0, 1, 101),),
                               options=GroupOptions(False, 0, 0.0, False, 0))).empty


def test_options_that_differ_from_the_groups_are_refused_naming_both_values():
    spec = _spec(listen=UDP, options=GroupOptions(flow_table_size=1024))
    made = Observed("web", UDP, True, (_lst(1, 101),), (_member(0, 1, 101),),
                    options=GroupOptions(True, 4096, 30.0, False, 0))
    with pytest.raises(StateError) as e:
        plan(spec, made)
    assert e.value.exit_status == ExitStatus.STATE
    assert str(e.value) == (
        "group web: flow_table_size is 4096 in the kernel and 1024 in the file; a group's creation options are "
        "fixed (`unload(group=web)` first, then apply again to make it anew), the group is left as it is")
    with pytest.raises(StateError, match="quic is off in the kernel and on in the file"):
        plan(_spec(listen=UDP, options=GroupOptions(quic=True)), made)


# Server generations (docs/decisions/0021) ------------------------------------------


def _gen_lst(cookie: int, pid: int, master: str) -> Candidate:
    return Candidate(cookie, cookie + 1000, pid, 6, "nginx", "/usr/sbin/nginx", 33, "/", (1, pid), generation_key=master)


def test_a_second_server_beside_the_first_is_a_new_generation_and_the_first_drains():
    from rpctl.controller.store.membership import Mark
    from rpctl.controller.tables.server_generations import NEWEST

    members = (Current(0, "nginx-1", 1, 101, 6, 1, False, True, mark=Mark(1)),
               Current(1, "nginx-2", 2, 102, 6, 1, False, True, mark=Mark(1)))
    listeners = (_gen_lst(1, 101, "m1"), _gen_lst(2, 102, "m1"), _gen_lst(3, 201, "m2"))
    p = plan(_spec(rollout=NEWEST), Observed("web", KEY, True, listeners, members))
    assert [(a.name, a.mark) for a in p.adds] == [("nginx-3", Mark(2))]
    assert [(r.name, r.draining) for r in p.reweighs] == [("nginx-1", True), ("nginx-2", True)]
    assert p.lines()[-2:] == ["group web: generation 1: draining (takes no new work)",
                              "group web: generation 2: takes new work"]
    # Once done, the same plan again is nothing to do.
    done = (*(Current(m.index, m.name, m.cookie, m.pid, 6, 1, True, True, mark=m.mark) for m in members),
            Current(2, "nginx-3", 3, 201, 6, 1, False, True, mark=Mark(2)))
    assert plan(_spec(rollout=NEWEST), Observed("web", KEY, True, listeners, done)).empty


def test_a_group_without_generations_marks_nothing():
    p = plan(_spec(), Observed("web", KEY, False, (_gen_lst(1, 101, "m1"),)))
    assert p.adds[0].mark.server_gen == 0 and not p.marks


def test_a_canary_planned_again_is_nothing_to_do_and_generations_left_out_are_cleared():
    from rpctl.controller.store.membership import NO_MARK, Mark
    from rpctl.controller.tables.server_generations import Rollout

    spec = _spec(rollout=Rollout(5))
    listeners = (_gen_lst(1, 101, "m1"), _gen_lst(2, 201, "m2"))
    first = plan(spec, Observed("web", KEY, True, listeners, (Current(0, "nginx-1", 1, 101, 6, 1, False, True),)))
    (add,) = first.adds
    (old,) = first.marks
    assert (add.weight, add.mark) == (500, Mark(2, canary=True)) and old.mark == Mark(1)
    applied = (Current(0, "nginx-1", 1, 101, 6, 9500, False, True, mark=Mark(1)),
               Current(1, "nginx-2", 2, 201, 6, 500, False, True, mark=add.mark))
    assert plan(spec, Observed("web", KEY, True, listeners, applied)).empty
    cleared = plan(_spec(), Observed("web", KEY, True, listeners, applied))
    assert {r.name: r.mark for r in cleared.marks} == {"nginx-1": NO_MARK, "nginx-2": NO_MARK}
    assert {r.name: r.weight for r in cleared.reweighs} == {"nginx-1": 1, "nginx-2": 1}
    assert "group web: nginx-1 generation none" in cleared.lines()


# Shared listeners: a prefork server's children share each socket ---------------------


def _shared(cookie: int, servers: tuple, parent: int = 1) -> Candidate:
    return Candidate(cookie, cookie + 1000, servers[0], 6, "nginx", "/usr/sbin/nginx", 33, "/",
                     (parent, *servers), servers)


def _parent_only(cookie: int, parent: int = 1) -> Candidate:
    """Only the parent holds it, not seen serving it: between two generations of children."""
    return Candidate(cookie, cookie + 1000, parent, 6, "nginx", "/usr/sbin/nginx", 33, "/", (parent,), (), True)


def test_a_shared_listener_is_admitted_under_its_first_server_and_recorded_shared():
    p = plan(_spec(), Observed("web", KEY, False, (_shared(1, (101, 102)),)))
    assert [(a.name, a.pid, a.shared) for a in p.adds] == [("nginx-1", 101, True)]
    assert p.unmanaged == () and p.unserved == ()


def test_a_shared_member_keeps_its_record_while_its_process_serves_and_follows_new_children():
    shared = Current(0, "nginx-1", 1, 101, 6, 1, False, True, shared=True)
    same = plan(_spec(), Observed("web", KEY, True, (_shared(1, (101, 102, 201)),), (shared,)))
    assert same.empty
    restarted = plan(_spec(), Observed("web", KEY, True, (_shared(1, (201, 202)),), (shared,)))
    assert [(r.pid, r.old_pid, r.shared) for r in restarted.refreshes] == [(201, 101, True)]
    assert restarted.lines() == ["group web: nginx-1 pid 101 -> 201 (same socket, fd 6, shared with other processes)"]


def test_a_member_never_moves_to_a_parent_that_only_holds_its_socket():
    shared = Current(0, "nginx-1", 1, 101, 6, 1, False, True, shared=True)
    p = plan(_spec(), Observed("web", KEY, True, (_parent_only(1),), (shared,)))
    assert p.refreshes == () and p.removes == () and p.unserved == ("nginx-1",)
    # A process that only holds the socket is admitted (a single-process server in poll()),
    # and looked at again soon.
    first = plan(_spec(), Observed("web", KEY, False, (_parent_only(1),)))
    assert [a.pid for a in first.adds] == [1] and first.unserved == ("nginx-1",)


def test_server_ids_from_cookies_are_asked_for_joining_sockets():
    spec = _spec(quic_ids_from_cookie=True, options=GroupOptions(quic=True, quic_server_id_length=3))
    p = plan(spec, Observed("web", KEY, False, (_lst(0x1234567, 101),)))
    assert [a.quic_server_id for a in p.adds] == ["234567"]
    assert [a.quic_server_id for a in plan(_spec(), Observed("web", KEY, False, (_lst(7, 101),))).adds] == [None]


# candidates and observe: what plan() is given ----------------------------------------------


def test_candidates_are_the_endpoints_listeners_with_who_serves_each():
    from rpctl.controller.kernel.discover import Endpoint, Holder, Identity, Listener
    from rpctl.controller.ops.reconcile import candidates

    ep = Endpoint("tcp", socket.AF_INET, "127.0.0.1", 8080, [
        Listener(1, 1001, 33, 0, 511, [Holder(7, 5, "nginx"), Holder(8, 5, "nginx")], [8], Holder(8, 5, "nginx"),
                 [Holder(8, 5, "nginx")]),
        Listener(2, 1002, 33, 0, 511, [Holder(7, 6, "nginx"), Holder(9, 6, "nginx")], [], None),
    ])
    asked = []

    def identify(pid):
        asked.append(pid)
        return Identity("nginx", "/usr/sbin/nginx", 33, "/")

    assert candidates(ep, identify) == (
        Candidate(1, 1001, 8, 5, "nginx", "/usr/sbin/nginx", 33, "/", (7, 8), (8,)),
        Candidate(2, 1002, holders=(7, 9)),
    )
    assert asked == [8], "only a serving process is identified"
    assert candidates(None) == ()


def test_observe_takes_the_listeners_it_is_given(monkeypatch, tmp_path):
    import rpctl.controller.ops.reconcile as reconcile

    class NoGroups:
        def group_dir(self, name):
            return str(tmp_path / name)

        def groups(self):
            return []

    monkeypatch.setattr(reconcile, "discover", lambda *a, **kw: pytest.fail("discovered again"))
    listeners = (_lst(1, 101),)
    assert reconcile.observe(_spec(), NoGroups(), listeners) == Observed("web", KEY, False, listeners)


def test_a_pin_the_members_cannot_take_is_left_out_of_the_plan_with_the_reason():
    import os

    # Two members in this process: allowed on the same CPUs, which one serves a CPU is ambiguous.
    me = os.getpid()
    adds = (Add("nginx-3", 1, me, 7, "nginx", 1, False),)
    refused = without_refused_pin(Plan("web", KEY, adds=adds, pin=PinSpec("cpu"), pids={"nginx-1": me, "nginx-3": me}))
    assert refused.pin is None and refused.adds == adds
    assert refused.pin_refused.startswith("cpu not applied, the live pin mode stays: pin cpu: "), refused.pin_refused
    weighted = Plan("web", KEY, adds=adds, pids={"nginx-1": me, "nginx-3": me})
    assert without_refused_pin(weighted) is weighted
