"""controller/store/flows.py: live flows per member and entries, from the flow table's sets."""

from __future__ import annotations

import ctypes

from rpctl.controller.contract import abi
from rpctl.controller.store import flows


class _Table:
    def __init__(self, sets: list[list[abi.RpFlow]]):
        self.raw = b"".join(bytes(abi.RpFlowSet((abi.RpFlow * abi.RP_FLOW_WAYS)(*ways))) for ways in sets)

    def read_bytes(self, value_type, count):
        assert value_type is abi.RpFlowSet
        assert len(self.raw) == count * 128
        return self.raw


class _Group:
    def __init__(self, sets):
        self.maps = {"flows": _Table(sets)}


def _way(tag: int, member: int, incarnation: int, seen: int) -> abi.RpFlow:
    return abi.RpFlow(tag=tag, member=member, incarnation=incarnation, seen=seen)


def test_live_flows_are_fresh_and_of_the_members_current_socket(monkeypatch):
    now = 0xFFFFFF00  # near the wrap of the 32-bit tick
    monkeypatch.setattr(flows.jiffies, "now", lambda: now)
    idle = 30 * 250
    ctl = abi.RpCtl(flow_table_size=2 * abi.RP_FLOW_WAYS, flow_idle_ms=30_000, flow_idle_ticks=idle)
    gen = abi.RpGen()
    gen.incarnation[0], gen.incarnation[1] = 5, 7  # index 2: no member
    sets = [
        [
            _way(0x11, 0, 5, now - 1000),             # live on 0
            _way(0x13, 0, 5, (now + 300) & 0xFFFFFFFF),  # refreshed after our clock read, past the wrap
            _way(0x15, 0, 5, now - idle - 1),         # idle
            abi.RpFlow(),                                   # empty
        ],
        [
            _way(0x21, 1, 6, now),                    # placed on index 1's previous socket
            _way(0x23, 1, 7, now),                    # live on 1
            _way(0x23, 1, 7, now),                    # the same flow written twice: counted once
            _way(0x25, 2, 1, now),                    # index 2 is no member now
        ],
    ]
    table = flows.read_flows(_Group(sets), ctl, gen)
    assert table.live == {0: 2, 1: 1}
    assert (table.size, table.entries) == (2 * abi.RP_FLOW_WAYS, 6)


def test_the_set_layout_is_the_c_one():
    assert flows.FLOW_SET_SIZE == 128 and flows.FLOW_WAY.size == 16
    assert (flows.FLOW_WAY.size, flows.FLOW_SET_SIZE) == (ctypes.sizeof(abi.RpFlow), ctypes.sizeof(abi.RpFlowSet))
