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
from rpctl.controller.ops.reconcile import Plan, Reweigh, Unmanaged

KEY = EndpointKey("tcp", socket.AF_INET, "127.0.0.1", 8080)
SPEC = GroupSpec("web", KEY)
SIGNS = watch.Signs(frozenset({1, 2}), frozenset())
UNDECIDED = Unmanaged(2, 22, 0, "", "cannot tell which of pids 7 serves it")
STRANGER = Unmanaged(3, 33, 99, "intruder", "comm 'intruder' is not 'nginx'")


@pytest.fixture
def plans(monkeypatch):
    """The plans the next reconciles return, in order (an exception is raised)."""
    queue: list = []

    def fake(spec, layout, **kw):
        item = queue.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item

    monkeypatch.setattr(keepers.reconcile, "reconcile", fake)
    return queue


class Made:
    """A layout under which the group exists (its folder is one that does: /)."""

    def group_dir(self, name):
        return "/"


def keeper() -> keepers.Keeper:
    return keepers.Keeper(SPEC, layout=Made())


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
    assert k.next_full == keepers.next_check(clock[0]) and k.soon == 0


def test_a_stranger_is_named_at_once_and_once(plans, caplog):
    k = keeper()
    caplog.set_level(logging.INFO, "rpctl.serve")
    for _ in range(3):
        plans.append(Plan("web", KEY, unmanaged=(STRANGER,)))
        k.reconcile(SIGNS, "periodic check")
    assert caplog.text.count("not admitted: socket 3 of pid 99 intruder") == 1
    assert k.soon == 0


def test_a_pin_the_members_cannot_take_is_logged_once_until_it_is_taken(plans, caplog):
    k = keeper()
    caplog.set_level(logging.INFO, "rpctl.serve")
    refused = "cpu not applied, the live pin mode stays: pin cpu: nginx-1 and nginx-3 may both run on CPU 0"
    for p in (Plan("web", KEY, pin_refused=refused), Plan("web", KEY, pin_refused=refused), Plan("web", KEY),
              Plan("web", KEY, pin_refused=refused)):
        plans.append(p)
        k.reconcile(SIGNS, "periodic check")
    assert caplog.text.count("group web: pin cpu not applied") == 2, caplog.text


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


class FakeLook:
    """A look that shows the group's endpoint with `listeners` and every pid alive."""

    def __init__(self, listeners=frozenset({1, 2})):
        self.listeners = frozenset(listeners)
        self.served_asked = 0

    def signs(self, key, pids):
        return watch.Signs(self.listeners, frozenset(pids))

    def served(self, key):
        self.served_asked += 1
        return None

    def identity(self, pid):
        raise AssertionError("no listener, no identity")


@pytest.fixture
def dry_plans(monkeypatch):
    """The plans the periodic check works out, in order (observe replaced: no kernel)."""
    queue: list = []
    monkeypatch.setattr(keepers.reconcile, "observe", lambda spec, layout, listeners: ("observed", listeners))
    monkeypatch.setattr(keepers.reconcile, "plan", lambda spec, observed: queue.pop(0))
    return queue


def settled_keeper(plans, clock) -> keepers.Keeper:
    k = keeper()
    plans.append(Plan("web", KEY, pids={"nginx-1": 1}))
    assert k.tick(clock[0], FakeLook(), force=True)
    return k


def test_a_look_that_finds_nothing_new_reconciles_nothing_until_the_periodic_check(plans, dry_plans, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(keepers.time, "monotonic", lambda: clock[0])
    k = settled_keeper(plans, clock)
    assert 0 < k.next_full - clock[0] <= keepers.RESYNC
    clock[0] = k.next_full - 0.1
    assert not k.tick(clock[0], FakeLook()) and not dry_plans, "nothing asked of /proc or of the group"
    # A new listener: reconciled at once, whatever the time.
    plans.append(Plan("web", KEY, pids={"nginx-1": 1}))
    assert k.tick(clock[0], FakeLook({1, 2, 3}))
    assert plans == []


def test_the_periodic_check_reconciles_only_when_a_reconcile_would_change_something(plans, dry_plans, monkeypatch,
                                                                                    caplog):
    clock = [1000.0]
    monkeypatch.setattr(keepers.time, "monotonic", lambda: clock[0])
    caplog.set_level(logging.INFO, "rpctl.serve")
    k = settled_keeper(plans, clock)
    clock[0] = k.next_full
    look = FakeLook()
    dry_plans.append(Plan("web", KEY))
    assert not k.tick(clock[0], look), "the plan is empty: nothing to do"
    assert look.served_asked == 1 and k.next_full == keepers.next_check(clock[0])
    # An operator changed a weight by hand: the plan sets it back, so the group is reconciled.
    clock[0] = k.next_full
    dry_plans.append(Plan("web", KEY, reweighs=(Reweigh("nginx-1", 0, 1, False, 3, False),)))
    plans.append(Plan("web", KEY, pids={"nginx-1": 1}))
    assert k.tick(clock[0], look) and plans == [] and not dry_plans
    # Something new to say (a stranger's listener), or one no process serves yet, or a shared
    # member only its parent holds: reconciled too.
    for dry in (Plan("web", KEY, unmanaged=(STRANGER,)), Plan("web", KEY, unmanaged=(UNDECIDED,)),
                Plan("web", KEY, unserved=("nginx-1",))):
        clock[0] = k.next_full
        dry_plans.append(dry)
        plans.append(Plan("web", KEY))
        assert k.tick(clock[0], look), dry
        k.soon = 0.0


def test_a_group_waiting_for_a_retry_is_reconciled_in_full(plans, dry_plans, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(keepers.time, "monotonic", lambda: clock[0])
    k = keeper()
    plans.append(InvalidInput("add nginx-4: refused"))
    assert k.tick(clock[0], FakeLook(), force=True)
    assert k.next_full == clock[0] + keepers.RETRY
    clock[0] = k.next_full
    plans.append(Plan("web", KEY))
    assert k.tick(clock[0], FakeLook()) and not dry_plans


def test_a_group_not_made_yet_with_nothing_to_adopt_is_checked_without_asking_the_kernel(plans, monkeypatch):
    # No folder, no listener: the plan is empty, without the search of every group that observe() makes.
    monkeypatch.setattr(keepers.reconcile, "observe", lambda *a: pytest.fail("observed"))
    clock = [1000.0]
    monkeypatch.setattr(keepers.time, "monotonic", lambda: clock[0])
    k = keepers.Keeper(SPEC, NoGroups())
    plans.append(Plan("web", KEY))
    assert k.tick(clock[0], FakeLook(), force=True)
    clock[0] = k.next_full
    assert not k.tick(clock[0], FakeLook())
    assert k.next_full == keepers.next_check(clock[0])


def test_every_group_is_checked_at_the_same_moment_and_never_more_than_resync_apart():
    moments = {keepers.next_check(t) for t in (1000.0, 1003.7, 1019.99)}
    assert moments == {1020.0}
    assert keepers.next_check(1020.0) == 1020.0 + keepers.RESYNC


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
    assert not k.has_children() and not k.samples()
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
    assert k.has_children() and k.waits().key is None, "only a reread of the file makes it look"
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
    assert k.waits().until == 0.0  # serve does not leave a draining generation unlooked at
    for now in (1.0, 1.1, 1.6, 2.2, 2.8, 3.4):  # looks of serve; one read each DRAIN_LOOK at most
        k.watch_generations(now)
    assert len(reads) == 3  # 1.0, 1.6, 2.2: then drained, nothing draining is looked at no more
    assert caplog.text.count("generation 1 of web drained: safe to stop") == 1
    assert k.waits().until == k.next_glance  # nothing draining: a glance for another command's publish


def test_a_publish_by_another_command_makes_a_group_with_generations_looked_at_again(caplog, monkeypatch):
    from types import SimpleNamespace

    from rpctl.controller.tables.server_generations import NEWEST

    gen = [7]
    reads = []

    class Opened:
        def __enter__(self):
            return SimpleNamespace(ctl=lambda: SimpleNamespace(gen=gen[0]),
                                   maps={"gens": SimpleNamespace(get=lambda i, t: SimpleNamespace(published_ns=gen[0]))})

        def __exit__(self, *exc):
            return False

    def read_view(name, layout, with_queues):
        reads.append(name)
        return SimpleNamespace(generations=[SimpleNamespace(number=1, state="drained"),
                                            SimpleNamespace(number=2, state="serving")])

    monkeypatch.setattr(keepers, "Group", SimpleNamespace(open=lambda name, layout: Opened()))
    monkeypatch.setattr(keepers.views, "read_view", read_view)
    caplog.set_level(logging.INFO, "rpctl.serve")
    k = keepers.Keeper(GroupSpec("web", KEY, rollout=NEWEST), layout=None)
    k.watch_generations(1.0)   # the first glance: generation 7 is news, looked at
    k.watch_generations(2.5)   # the same generation: nothing read
    gen[0] = 8                 # rpctl promote published
    k.watch_generations(3.0)   # not yet: a glance a second
    k.watch_generations(3.6)
    assert len(reads) == 2
    assert caplog.text.count("generation 1 of web drained: safe to stop") == 1
