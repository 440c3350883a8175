"""controller/store/steering.py without bpffs: the throttle map's encoding."""

from __future__ import annotations

import time

from rpctl.controller.contract import abi
from rpctl.controller.read.views import throttle_reasons
from rpctl.controller.store.generation import Group
from rpctl.controller.store.state import Layout
from rpctl.controller.store.steering import put_throttle
from rpctl.controller.tables.adaptive import Reason


class _OneElement:
    """An array map of one element, in memory: what put_throttle writes and throttle_reasons reads."""

    def __init__(self):
        self.value = None

    def put(self, key, value, flags=0):
        assert key == 0
        self.value = bytes(value)

    def get(self, key, value_type):
        return None if self.value is None else value_type.from_buffer_copy(self.value)


class _Members:
    """The member map, in memory: named members at every index."""

    def read_structs(self, struct, count):
        return [struct(name=f"w{i}".encode(), flags=abi.RP_MEMBER_USED) for i in range(count)]


def _group() -> Group:
    return Group(Layout(root="/nonexistent", netns="netns1"), "web", {"throttle": _OneElement(), "members": _Members()})


def test_the_throttle_map_says_who_until_when_and_why():
    g = _group()
    lease = time.monotonic_ns() + 10**9
    put_throttle(g, {0: Reason(9, 1), 63: Reason(40, 2), 64: Reason(8, 0), 255: Reason(2**40, 3)}, lease, 77)
    t = g.maps["throttle"].get(0, abi.RpThrottle)
    assert (t.lease_ns, t.sampled_ns) == (lease, 77)
    assert list(t.bits) == [1 | 1 << 63, 1, 0, 1 << 63]
    assert throttle_reasons(t, "tcp") == {0: "queue 9, others <= 1", 63: "queue 40, others <= 2",
                                          64: "queue 8, others <= 0", 255: "queue 4294967295, others <= 3"}
    # A UDP group's queue is its receive queue, in bytes.
    assert throttle_reasons(t, "udp")[0] == "queue 9 bytes, others <= 1 bytes"
    # A lease that ran out throttles nobody, for readers as for the program.
    put_throttle(g, {5: Reason(9, 0)}, time.monotonic_ns() - 1)
    assert throttle_reasons(g.maps["throttle"].get(0, abi.RpThrottle), "tcp") == {}
    # Nobody throttled: no lease either.
    put_throttle(g, {}, lease)
    t = g.maps["throttle"].get(0, abi.RpThrottle)
    assert t.lease_ns == 0 and throttle_reasons(t, "tcp") == {}


def test_each_throttle_and_release_goes_to_the_audit_trail(syslog):
    g = _group()
    lease = time.monotonic_ns() + 10**9
    put_throttle(g, {3: Reason(9, 1)}, lease)
    put_throttle(g, {3: Reason(9, 1)}, lease)  # the same again: not a change
    put_throttle(g, {}, 0)
    assert syslog.changes() == [("web", "w3 throttled (queue 9, others <= 1)"), ("web", "w3 released")]
