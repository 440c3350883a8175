"""controller/ops/watch.py: when serve reconciles (pure), and the cheap look at a real socket."""

from __future__ import annotations

import math
import os
import socket

import pytest
from rpctl.controller.kernel import diag, sockets
from rpctl.controller.ops import watch
from rpctl.controller.ops.watch import Signs, difference

SETTLED = Signs(frozenset({1, 2, 3}), frozenset({100, 101, 102}))


def test_the_first_look_reconciles():
    assert difference(None, SETTLED) == "first look"


def test_nothing_changed_means_no_reconcile():
    assert difference(SETTLED, Signs(frozenset({3, 2, 1}), frozenset({102, 101, 100}))) is None


def test_a_new_listener_reconciles():
    assert difference(SETTLED, Signs(frozenset({1, 2, 3, 4}), SETTLED.live_pids)) == "1 new listener"


def test_a_closed_listener_reconciles():
    assert difference(SETTLED, Signs(frozenset({1, 2}), SETTLED.live_pids)) == "1 listener closed"


def test_replaced_processes_reconcile():
    now = Signs(SETTLED.listeners, frozenset({100}))
    assert difference(SETTLED, now) == "pids 101, 102 exited"


def test_a_pid_that_comes_back_alive_is_no_change():
    # Only exits count: a pid the reconcile left dead that a later look
    # finds alive cannot happen but for pid reuse, and is no sign of a reload.
    settled = Signs(SETTLED.listeners, frozenset({100}))
    assert difference(settled, SETTLED) is None


def test_everything_at_once():
    now = Signs(frozenset({2, 3, 9, 10}), frozenset({101, 102}))
    assert difference(SETTLED, now) == "2 new listeners; 1 listener closed; pid 100 exited"


def test_live_pids_drops_the_dead_and_the_unknown():
    child = os.fork()
    if child == 0:
        os._exit(0)
    os.waitpid(child, 0)
    assert watch.live_pids([os.getpid(), child, 0]) == {os.getpid()}


def test_listener_cookies_sees_only_its_endpoint():
    # Unprivileged: sock_diag lists this user's listeners too.
    with socket.socket() as s, socket.socket() as other:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        other.bind(("127.0.0.2", port))
        other.listen()
        key = sockets.EndpointKey("tcp", socket.AF_INET, "127.0.0.1", port)
        assert watch.listener_cookies(key) == {sockets.cookie_of(s)}
    assert watch.listener_cookies(key) == frozenset()


def test_listener_cookies_of_an_ipv6_udp_endpoint():
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as v4:
        s.bind(("::1", 0))
        port = s.getsockname()[1]
        v4.bind(("127.0.0.1", port))
        key = sockets.EndpointKey("udp", socket.AF_INET6, "::1", port)
        assert watch.listener_cookies(key) == {sockets.cookie_of(s)}


def test_nothing_changed_is_said_at_once_when_pids_stay():
    # The look every group gets several times a second: same listeners, no pid gone.
    assert difference(SETTLED, Signs(SETTLED.listeners, SETTLED.live_pids | {103})) is None


# One Look for every group at one moment ---------------------------------------------------

KEY_A = sockets.EndpointKey("tcp", socket.AF_INET, "127.0.0.1", 8080)
KEY_B = sockets.EndpointKey("tcp", socket.AF_INET, "127.0.0.1", 8081)
KEY_U = sockets.EndpointKey("udp", socket.AF_INET6, "::", 53)


class Namespace:
    """A made-up namespace's listeners: 8080 has cookies 1 and 2 (queues 0 and 5), 8081 cookie 3,
    [::]:53 over UDP cookie 4; and the dumps asked of it."""

    def __init__(self):
        self.found = {diag.wire_endpoint(6, socket.AF_INET, "127.0.0.1", 8080): {1: 0, 2: 5},
                      diag.wire_endpoint(6, socket.AF_INET, "127.0.0.1", 8081): {3: 0},
                      diag.wire_endpoint(17, socket.AF_INET6, "::", 53): {4: 2048}}
        self.asked: list[tuple[int, int]] = []

    def dump(self, proto, family, ports=None):
        self.asked.append((proto, family) if ports is None else (proto, family, sorted(ports)))
        ns = self

        class Dump:
            def by_endpoint(self):
                return {k: dict(v) for k, v in ns.found.items()
                        if k[:2] == (proto, family) and (ports is None or k[3] in ports)}

            def fingerprint(self):
                return repr(sorted((k, sorted(v)) for k, v in self.by_endpoint().items())).encode()

        return Dump()


@pytest.fixture
def dumps(monkeypatch):
    ns = Namespace()
    monkeypatch.setattr(watch.diag, "ListenerDump", ns.dump)
    return ns


def test_one_dump_per_protocol_and_family_serves_every_group(dumps):
    look = watch.Look()
    assert look.listeners(KEY_A) == {1, 2} and look.queues(KEY_A) == {1: 0, 2: 5}
    assert look.listeners(KEY_B) == {3}
    assert look.listeners(KEY_A._replace(port=9999)) == frozenset()
    assert dumps.asked == [(6, socket.AF_INET)], "one dump for every TCP group over IPv4"
    assert look.queues(KEY_U) == {4: 2048}
    assert dumps.asked == [(6, socket.AF_INET), (17, socket.AF_INET6)]


def test_a_look_of_ports_reads_those_alone(dumps):
    look = watch.Look(frozenset({8081}))
    assert look.queues(KEY_B) == {3: 0} and look.queues(KEY_A) == {}
    assert dumps.asked == [(6, socket.AF_INET, [8081])]


def test_a_look_tells_how_things_are_for_fresh_seconds_after_its_first_dump(dumps, monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(watch.time, "monotonic", lambda: clock[0])
    look = watch.Look()
    assert look.fresh(1000.0), "nothing read yet: whatever it reads will be new"
    look.listeners(KEY_A)
    clock[0] += 1.0
    look.listeners(KEY_B)
    assert len(dumps.asked) == 1, "one dump for the whole look, however long its groups take"
    assert look.fresh(100.0 + watch.FRESH) and not look.fresh(100.0 + 2 * watch.FRESH)


def test_each_pid_is_asked_once_per_look(monkeypatch):
    asked = []
    monkeypatch.setattr(watch.sockets, "process_exists", lambda pid: asked.append(pid) or pid != 7)
    look = watch.Look()
    assert look.live_pids([5, 7, 0, -1]) == {5}
    assert look.live_pids([5, 7, 9]) == {5, 9}
    assert asked == [5, 7, 9]
    assert watch.Look().signs(KEY_A, []) is not None and asked == [5, 7, 9]


def test_one_discover_per_protocol_serves_every_groups_periodic_check(monkeypatch):
    from rpctl.controller.kernel.discover import Endpoint

    found = {"tcp": [Endpoint("tcp", socket.AF_INET, "127.0.0.1", 8080), Endpoint("tcp", socket.AF_INET, "127.0.0.1", 8081)],
             "udp": []}
    asked = []

    def fake(port=None, proto=None, probe_reuseport=True):
        asked.append((port, proto, probe_reuseport))
        return found[proto]

    monkeypatch.setattr(watch.discover, "discover", fake)
    monkeypatch.setattr(watch.discover, "identity", lambda pid: asked.append(pid) or pid)
    look = watch.Look()
    assert look.served(KEY_A).port == 8080 and look.served(KEY_B).port == 8081
    assert look.served(KEY_U) is None and look.served(KEY_U) is None
    assert asked == [(None, "tcp", False), (None, "udp", False)], "every port of the protocol, once"
    assert [look.identity(7), look.identity(7)] == [7, 7] and asked[2:] == [7]


def test_quiet_holds_while_every_endpoint_and_pid_is_as_it_was(dumps, monkeypatch):
    alive = {5, 6}
    monkeypatch.setattr(watch.sockets, "process_exists", lambda pid: pid in alive)
    waits = [watch.Wait(KEY_A, frozenset({5}), 130.0), watch.Wait(KEY_B, frozenset({6}), 160.0),
             watch.Wait(None, frozenset(), math.inf)]
    quiet = watch.Quiet.of(watch.Look(), waits)
    assert quiet.until == 130.0 and quiet.pids == {5, 6}
    assert list(quiet.listeners) == [(6, socket.AF_INET)], "only the kinds of the watched endpoints"
    assert quiet.holds(watch.Look(), 129.9)
    assert not quiet.holds(watch.Look(), 130.0), "a periodic check is due"
    alive.discard(6)
    assert not quiet.holds(watch.Look(), 100.0), "a pid a group waits on exited"


def test_quiet_ends_with_a_new_listener_anywhere_or_one_moved(dumps, monkeypatch):
    monkeypatch.setattr(watch.sockets, "process_exists", lambda pid: True)
    quiet = watch.Quiet.of(watch.Look(), [watch.Wait(KEY_A, frozenset(), math.inf)])
    b = diag.wire_endpoint(6, socket.AF_INET, "127.0.0.1", 8081)
    as_it_was = dict(dumps.found)
    dumps.found[b] = {3: 7}
    assert quiet.holds(watch.Look(), 0.0), "a queue is no change"
    changes = {
        "a new listener of another group": lambda found: found[b].update({9: 0}),
        "another group's listener closed": lambda found: found.pop(b),
        "a socket on another endpoint": lambda found: found.update({b._replace(port=8082): found.pop(b)}),
    }
    for what, change in changes.items():
        dumps.found = {**as_it_was, b: {3: 0}}
        change(dumps.found)
        assert not quiet.holds(watch.Look(), 0.0), what
    dumps.found = as_it_was
    assert quiet.holds(watch.Look(), 0.0)
