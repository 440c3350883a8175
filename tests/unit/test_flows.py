"""controller/flows.py: live flows per member, entries and evictions from the table's raw values."""

from __future__ import annotations

import ctypes

from rpctl.controller import abi, flows


class _Table:
    def __init__(self, values: list[abi.RpFlow]):
        self.raw = b"".join(bytes(v) for v in values)

    def read_hash_values(self, value_type, capacity):
        assert value_type is abi.RpFlow
        return self.raw


class _Group:
    def __init__(self, values):
        self.maps = {"flows": _Table(values)}


def test_live_flows_are_fresh_and_of_the_members_current_socket(monkeypatch):
    now = 100 * 10**9
    monkeypatch.setattr(flows, "now_ns", lambda: now)
    ctl = abi.RpCtl(flow_table_size=16, flow_idle_ms=30_000)
    gen = abi.RpGen()
    gen.incarnation[0], gen.incarnation[1] = 5, 7  # index 2: no member
    second = 10**9
    values = [
        abi.RpFlow(0, 5, now - 1 * second),     # live on 0
        abi.RpFlow(0, 5, now - 29 * second),    # live on 0
        abi.RpFlow(0, 5, now - 31 * second),    # idle
        abi.RpFlow(1, 6, now),                  # placed on index 1's previous socket
        abi.RpFlow(1, 7, now),                  # live on 1
        abi.RpFlow(2, 1, now),                  # index 2 is no member now
        abi.RpFlow(0, 5, now + second // 10),   # refreshed on another CPU after our clock read
    ]
    table = flows.read_flows(_Group(values), ctl, gen, inserts=9)
    assert table.live == {0: 3, 1: 1}
    assert (table.size, table.entries, table.evictions) == (16, 7, 2)
    # Entries inserted during the walk never make evictions negative.
    assert flows.read_flows(_Group(values), ctl, gen, inserts=3).evictions == 0


def test_the_value_layout_is_the_c_one():
    assert flows._FLOW.size == ctypes.sizeof(abi.RpFlow) == 16
