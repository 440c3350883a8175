"""controller/ops/keepers.py: the decisions of an adopted group's keeper, with the reconcile replaced:
when it looks again, and what it logs."""

from __future__ import annotations

import logging
import socket

import pytest
from rpctl.controller.contract.errors import InvalidInput
from rpctl.controller.kernel.sockets import EndpointKey
from rpctl.controller.ops import keepers, watch
from rpctl.controller.ops.config_spec import GroupSpec, RunSpec
from rpctl.controller.ops.reconcile import Plan, Unmanaged

KEY = EndpointKey("tcp", socket.AF_INET, "127.0.0.1", 8080)
SPEC = GroupSpec("web", KEY)
SIGNS = watch.Signs(frozenset({1, 2}), frozenset())
UNDECIDED = Unmanaged(2, 22, 0, "", "cannot tell which of pids 7 serves it")
STRANGER = Unmanaged(3, 33, 99, "intruder", "comm 'intruder' is not 'nginx'")


@pytest.fixture
def plans(monkeypatch):
    """The plans the next reconciles return, in order (an exception is raised)."""
    queue: list = []

    def fake(spec, layout):
        item = queue.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item

    monkeypatch.setattr(keepers.reconcile, "reconcile", fake)
    return queue


def keeper() -> keepers.Keeper:
    return keepers.Keeper(SPEC, layout=None)


def delay(k: keepers.Keeper, started: float) -> float:
    return round(k.next_full - started, 1)


def test_an_undecided_listener_is_looked_at_again_sooner_then_less_often(plans, caplog, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(keepers.time, "monotonic", lambda: clock[0])
    k = keeper()
    caplog.set_level(logging.INFO, "rpctl.serve")
    delays = []
    for _ in range(5):
        plans.append(Plan("web", KEY, unmanaged=(UNDECIDED,)))
        k.reconcile(SIGNS, "1 new listener")
        delays.append(delay(k, clock[0]))
    assert delays == [0.2, 0.4, 0.8, 1.6, 3.2]
    # Named once, when it stayed undecided long enough to be no reload half-way.
    assert caplog.text.count("not admitted: socket 2") == 1
    plans.append(Plan("web", KEY))
    k.reconcile(SIGNS, "pid 7 exited")
    assert delay(k, clock[0]) == keepers.RESYNC and k.soon == 0


def test_a_stranger_is_named_at_once_and_once(plans, caplog):
    k = keeper()
    caplog.set_level(logging.INFO, "rpctl.serve")
    for _ in range(3):
        plans.append(Plan("web", KEY, unmanaged=(STRANGER,)))
        k.reconcile(SIGNS, "periodic check")
    assert caplog.text.count("not admitted: socket 3 of pid 99 intruder") == 1
    assert k.soon == 0


def test_a_failed_reconcile_is_logged_once_and_tried_again(plans, caplog):
    k = keeper()
    caplog.set_level(logging.INFO, "rpctl.serve")
    for _ in range(2):
        plans.append(InvalidInput("add nginx-4: refused"))
        k.reconcile(SIGNS, "1 new listener")
    assert caplog.text.count("cannot reconcile (1 new listener): add nginx-4: refused") == 1
    assert k.settled == SIGNS, "the same signs do not make it try again at once"
    plans.append(Plan("web", KEY))
    k.reconcile(SIGNS, "periodic check")
    assert "group web: reconciled again" in caplog.text


def test_what_a_reconcile_left_is_settled(plans):
    k = keeper()
    plans.append(Plan("web", KEY, pids={"nginx-1": 1, "nginx-2": 2 ** 22 + 12345}))
    k.reconcile(SIGNS, "first look")
    assert k.pids == {1, 2 ** 22 + 12345}
    # pid 1 runs; the other cannot exist (above pid_max): left dead, no reason to reconcile again.
    assert k.settled == watch.Signs(SIGNS.listeners, frozenset({1}))
    assert watch.difference(k.settled, watch.Signs(SIGNS.listeners, watch.live_pids(k.pids))) is None


# What only a launched group does: an adopted group's keeper leaves it empty ------------

RUN = GroupSpec("api", EndpointKey("tcp", socket.AF_INET, "127.0.0.1", 9090),
                run=RunSpec(("/srv/api",), 2), names="worker-{i}")


class FakeLauncher:
    """A Launcher that records what the keeper asks of it."""

    def __init__(self, group, count, argv, **kw):
        self.calls = [("made", group, count, tuple(argv), kw["listen"])]
        self.members = []

    def __getattr__(self, name):
        answers = {"fileno": 42, "next_due": 1.5, "resize": ["worker-3 started"]}

        def call(*args):
            self.calls.append((name, *args))
            return answers.get(name)

        return call


class NoGroups:
    """A layout under which no group exists yet."""

    def group_dir(self, name):
        return f"/nonexistent/{name}"


@pytest.fixture
def launched(monkeypatch):
    monkeypatch.setattr(keepers, "Launcher", FakeLauncher)
    return keepers.keeper_for(RUN, NoGroups())


def test_an_adopted_group_has_no_children_to_wait_for():
    k = keepers.keeper_for(SPEC, None)
    assert type(k) is keepers.Keeper
    assert k.fds() == () and k.next_due() is None
    k.supervise()
    k.stop_now()
    moved = GroupSpec("web", KEY, weights={"nginx-1": 3})
    assert k.can_take(moved) and not k.can_take(GroupSpec("web", RUN.listen)) and not k.can_take(RUN)
    k.take(moved)
    assert k.spec is moved


def test_a_launched_group_hands_its_children_to_its_launcher(launched):
    k = launched
    assert isinstance(k, keepers.LaunchedKeeper)
    assert k.launcher.calls == [("made", "api", 2, ("/srv/api",), "127.0.0.1:9090"), ("open",), ("start",)]
    del k.launcher.calls[:]
    assert k.fds() == (42,) and k.next_due() == 1.5
    k.supervise()
    k.stop_now()
    k.close()
    assert k.launcher.calls == [("fileno",), ("next_due",), ("step", 0), ("stop",), ("close",)]


def test_a_launched_group_takes_a_new_count_in_place(launched, caplog):
    from dataclasses import replace

    k = launched
    del k.launcher.calls[:]
    caplog.set_level(logging.INFO, "rpctl.serve")
    weights = replace(RUN, weights={"worker-1": 2})
    assert k.can_take(weights)
    k.take(weights)
    assert k.launcher.calls == [] and k.spec is weights
    three = replace(RUN, run=RunSpec(("/srv/api",), 3))
    assert k.can_take(three)
    k.take(three)
    assert k.launcher.calls == [("resize", 3)] and k.spec is three
    assert "group api: count 2 -> 3" in caplog.text and "group api: worker-3 started" in caplog.text
    # Another command, other names or another backoff: a new keeper and a new launcher.
    assert not k.can_take(replace(RUN, run=RunSpec(("/srv/api2",), 3)))
    assert not k.can_take(replace(RUN, names="api-{i}"))
    assert not k.can_take(replace(RUN, run=RunSpec(("/srv/api",), 3, backoff_max=20.0)))


def test_a_draining_generation_is_looked_at_until_drained_and_told_once(plans, caplog, monkeypatch):
    from types import SimpleNamespace

    from rpctl.controller.tables.server_generations import NEWEST

    states = [["draining", "serving"], ["draining", "serving"], ["drained", "serving"]]
    reads = []

    def read_view(name, layout, with_queues):
        reads.append(name)
        now = states[min(len(reads), len(states)) - 1]
        return SimpleNamespace(generations=[SimpleNamespace(number=i + 1, state=s) for i, s in enumerate(now)])

    monkeypatch.setattr(keepers.views, "read_view", read_view)
    caplog.set_level(logging.INFO, "rpctl.serve")
    k = keepers.Keeper(GroupSpec("web", KEY, rollout=NEWEST), layout=None)
    plans.append(Plan("web", KEY))
    k.reconcile(SIGNS, "1 new listener")
    for now in (1.0, 1.1, 1.6, 2.2, 2.8, 3.4):  # looks of serve; one read each DRAIN_LOOK at most
        k.watch_generations(now)
    assert len(reads) == 3  # 1.0, 1.6, 2.2: then drained, nothing draining is looked at no more
    assert caplog.text.count("generation 1 of web drained: safe to stop") == 1
