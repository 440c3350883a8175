"""controller/flows.py: live flows per member and entries, from the flow table's sets."""

from __future__ import annotations

from rpctl.controller import abi, flows


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


def test_live_flows_are_fresh_and_of_the_members_current_socket(monkeypatch):
    now = 0xFFFFFF00  # near the wrap of the 32-bit tick
    monkeypatch.setattr(flows, "now_tick", lambda: now)
    ctl = abi.RpCtl(flow_table_size=2 * abi.RP_FLOW_WAYS, flow_idle_ms=30_000)
    idle = (30_000 * 1_000_000) >> abi.RP_FLOW_TICK_SHIFT
    gen = abi.RpGen()
    gen.incarnation[0], gen.incarnation[1] = 5, 7  # index 2: no member
    sets = [
        [
            abi.RpFlow(tag=0x11, member=0, incarnation=5, seen=now - 1000),             # live on 0
            abi.RpFlow(tag=0x13, member=0, incarnation=5, seen=(now + 300) & 0xFFFFFFFF),  # refreshed after our clock read, past the wrap
            abi.RpFlow(tag=0x15, member=0, incarnation=5, seen=now - idle - 1),         # idle
            abi.RpFlow(),                                   # empty
        ],
        [
            abi.RpFlow(tag=0x21, member=1, incarnation=6, seen=now),                    # placed on index 1's previous socket
            abi.RpFlow(tag=0x23, member=1, incarnation=7, seen=now),                    # live on 1
            abi.RpFlow(tag=0x23, member=1, incarnation=7, seen=now),                    # the same flow written twice: counted once
            abi.RpFlow(tag=0x25, member=2, incarnation=1, seen=now),                    # index 2 is no member now
        ],
    ]
    table = flows.read_flows(_Group(sets), ctl, gen)
    assert table.live == {0: 2, 1: 1}
    assert (table.size, table.entries) == (2 * abi.RP_FLOW_WAYS, 6)


def test_the_set_layout_is_the_c_one():
    assert flows._SET == 128 and flows._WAY.size == 16
