"""controller/ops/serve.py's decisions about one adopted group, with the reconcile replaced:
when it looks again, and what it logs."""

from __future__ import annotations

import logging
import socket

import pytest
from rpctl.controller.contract.errors import InvalidInput
from rpctl.controller.kernel.sockets import EndpointKey
from rpctl.controller.ops import serve, watch
from rpctl.controller.ops.config import GroupSpec
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

    monkeypatch.setattr(serve.reconcile, "reconcile", fake)
    return queue


def keeper() -> serve._Keeper:
    return serve._Keeper(SPEC, layout=None)


def delay(k: serve._Keeper, started: float) -> float:
    return round(k.next_full - started, 1)


def test_an_undecided_listener_is_looked_at_again_sooner_then_less_often(plans, caplog, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(serve.time, "monotonic", lambda: clock[0])
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
    assert delay(k, clock[0]) == serve.RESYNC and k.soon == 0


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
