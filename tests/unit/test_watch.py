"""controller/ops/watch.py: when serve reconciles (pure), and the cheap look at a real socket."""

from __future__ import annotations

import os
import socket

from rpctl.controller.kernel import sockets
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
