"""controller/read/views.py: a member's state from its flags and queue; listeners that are not members."""

from __future__ import annotations

import json
import socket

import pytest
from rpctl.controller.kernel import diag, discover
from rpctl.controller.kernel.discover import Holder
from rpctl.controller.read import views

from tests.support.views import group_view, member


@pytest.mark.parametrize(
    "draining, gone, queue, state",
    [
        (False, False, 5, "active"),
        (False, False, 0, "active"),
        (False, False, None, "active"),
        (True, False, 3, "draining"),
        (True, False, None, "draining"),  # queue unknown: not yet known to be empty
        (True, False, 0, "drained"),
        (False, True, 0, "gone"),
        (True, True, 0, "gone"),
        (True, True, None, "gone"),
    ],
)
def test_member_state(draining, gone, queue, state):
    assert member(0, "w", draining=draining, gone=gone, queue=queue).state == state


def _listener(cookie: int, addr: str = "127.0.0.1", port: int = 18080, family: int = socket.AF_INET):
    return diag.SocketDiag(cookie=cookie, inode=cookie + 1, uid=0, family=family, proto=socket.IPPROTO_TCP,
                           state=10, local_addr=addr, local_port=port, rqueue=0, wqueue=128)


def test_unmanaged_are_the_endpoints_listeners_that_are_not_members(monkeypatch):
    looked_up = []

    def holders_of(inodes):
        inodes = list(inodes)
        looked_up.append(inodes)
        return {i: [Holder(pid=i * 10, fd=3, comm="nc"), Holder(pid=i * 10 + 1, fd=4, comm="sh")] for i in inodes
                if i != 8}

    monkeypatch.setattr(discover, "holders_of", holders_of)
    view = group_view()  # members' cookies 8193..8196
    dump = [_listener(8193), _listener(8194), _listener(5),
            _listener(7),  # nobody visibly holds inode 8
            _listener(11, addr="127.0.0.2"), _listener(12, port=18081), _listener(13, addr="::ffff:127.0.0.1",
                                                                                 family=socket.AF_INET6)]
    got = views.unmanaged_listeners(view, dump)
    assert looked_up == [[6, 8]]
    assert got == [views.UnmanagedListener(cookie=5, inode=6, pid=60, comm="nc"),
                   views.UnmanagedListener(cookie=7, inode=8, pid=None, comm="")]


def test_no_unmanaged_listener_costs_no_process_scan(monkeypatch):
    monkeypatch.setattr(discover, "holders_of", lambda inodes: pytest.fail("scanned /proc"))
    assert views.unmanaged_listeners(group_view(), [_listener(8193), _listener(8196)]) == []


def test_a_throttled_member_is_throttled_until_it_drains_or_goes():
    assert member(0, "w", throttled="queue 37, others <= 2").state == "throttled"
    assert member(0, "w", throttled="queue 37, others <= 2", draining=True, queue=3).state == "draining"
    assert member(0, "w", throttled="queue 37, others <= 2", gone=True).state == "gone"


def test_a_state_is_its_word_in_json_metric_labels_and_text():
    assert [s.value for s in views.MemberState] == ["active", "throttled", "draining", "drained", "gone"]
    assert views.STATES == tuple(views.MemberState)
    assert (views.ACTIVE, views.THROTTLED, views.DRAINING, views.DRAINED, views.GONE) == views.STATES
    for state in views.MemberState:
        word = state.value
        assert state == word and views.MemberState(word) is state
        assert hash(state) == hash(word) and {word: 1}[state] == 1  # a table keyed by the word finds it
        assert str(state) == word and f"{state}" == word and f"{state:>10}" == f"{word:>10}"
        assert json.dumps({state: state}) == json.dumps({word: word})
        assert ", ".join([state, state]) == f"{word}, {word}"


def test_one_group_reads_its_port_many_groups_share_a_dump_per_protocol(monkeypatch):
    dumps = []

    def listeners(proto, port=None, family=None):
        """Sockets 1 and 2 on port 18080, 3 on 18081, 4 on 5353 (whatever the protocol)."""
        dumps.append((proto, port))
        found = {1: _listener(1), 2: _listener(2), 3: _listener(3, port=18081), 4: _listener(4, port=5353)}
        return {c: d for c, d in found.items() if port is None or d.local_port == port}

    monkeypatch.setattr(diag, "listeners", listeners)
    assert list(views.port_listeners("tcp", 18080)) == [1, 2]
    assert dumps == [(socket.IPPROTO_TCP, 18080)]
    dumps.clear()
    shared = views.SharedDump()
    for proto, port, cookies in [("tcp", 18080, [1, 2]), ("tcp", 18081, [3]), ("udp", 5353, [4]),
                                 ("tcp", 18082, []), ("udp", 5354, [])]:
        assert list(shared(proto, port)) == cookies, (proto, port)
    assert dumps == [(socket.IPPROTO_TCP, None), (socket.IPPROTO_UDP, None)]
