"""controller/store/membership.py without bpffs: a change of members -> the member table (pure).

place() decides where each joining socket goes and refuses a change whole
before anything is written; entry() is the member entry it writes;
quic_server_id() is the one place QUIC server ids are given.  Writing and
publishing them is tests/kernel (test_survive_crashes_and_bad_input.py,
test_discover_and_adopt_a_running_server.py, test_apply_a_config_file.py).
"""

from __future__ import annotations

import socket

import pytest
from rpctl.controller.contract import abi
from rpctl.controller.contract.errors import InvalidInput
from rpctl.controller.kernel.sockets import EndpointKey, SocketInfo
from rpctl.controller.store.membership import Joining, NewMember, Seat, entry, place, quic_server_id
from rpctl.controller.store.options import GroupOptions

ENDPOINT = EndpointKey("udp", socket.AF_INET, "127.0.0.1", 4433)
PLAIN = GroupOptions(True, 65536, 30.0, False, 0)
QUIC = GroupOptions(True, 65536, 30.0, True, 1)


def _table(*present: tuple[int, str, int], quic_ids: dict[int, int] | None = None):
    """A member table whose entries `present` ((index, name, cookie)) are live with weight 1,
    their sockets in the array; quic_ids: index -> server id."""
    members = [abi.RpMember() for _ in range(abi.RP_MAX_MEMBERS)]
    live, in_array = {}, {}
    for index, name, cookie in present:
        m = members[index]
        m.name, m.cookie, m.flags, m.incarnation = name.encode(), cookie, abi.RP_MEMBER_USED, 7
        if quic_ids and index in quic_ids:
            m.flags |= abi.RP_MEMBER_QUIC
            m.quic_server_id = quic_ids[index]
        live[index] = abi.RpPolicy(1, abi.RP_POLICY_PRESENT)
        in_array[index] = cookie
    return members, live, in_array


def _joining(name: str, cookie: int, key: EndpointKey = ENDPOINT, **kw) -> Joining:
    info = SocketInfo(key.family, socket.IPPROTO_UDP if key.proto == "udp" else socket.IPPROTO_TCP, key.addr,
                      key.port, cookie, True, False)
    return Joining(NewMember(name, 4000 + cookie, 3, **kw), None, info)


def _place(members, live, in_array, joining, options=PLAIN, leaving=()):
    return place("q", ENDPOINT, options, members, live, in_array, joining, leaving)


def test_new_members_take_the_lowest_free_indexes_in_order():
    members, live, in_array = _table((0, "a", 100), (2, "b", 102))
    seats = _place(members, live, in_array, [_joining("c", 103), _joining("d", 104), _joining("e", 105)])
    assert [(s.index, s.joining.member.name, s.replaces, s.new_socket) for s in seats] == [
        (1, "c", False, True), (3, "d", False, True), (4, "e", False, True)]


def test_a_killed_writers_leftover_is_free_and_a_leaving_index_is_not():
    members, live, in_array = _table((0, "a", 100), (1, "b", 101))
    members[2].flags = abi.RP_MEMBER_USED  # written, never made live
    seats = _place(members, live, in_array, [_joining("c", 103), _joining("d", 104)], leaving={1})
    assert [s.index for s in seats] == [2, 3]


def test_a_replacement_keeps_its_index_and_its_own_socket_is_not_put_again():
    members, live, in_array = _table((0, "a", 100), (1, "b", 101))
    (new_socket,) = _place(members, live, in_array, [_joining("b", 111, replace=True)])
    (same_socket,) = _place(members, live, in_array, [_joining("b", 101, replace=True)])
    assert (new_socket.index, new_socket.replaces, new_socket.new_socket) == (1, True, True)
    assert (same_socket.index, same_socket.replaces, same_socket.new_socket) == (1, True, False)
    # replace=True with no member of that name: a new member.
    (fresh,) = _place(members, live, in_array, [_joining("c", 102, replace=True)])
    assert (fresh.index, fresh.replaces) == (2, False)


@pytest.mark.parametrize("joining, message", [
    ([_joining("b", 102)], r"add b: group 'q' already has a member 'b' \(use "),
    ([_joining("b", 102, what="register b")], "register b: group 'q' already has a member 'b'"),
    ([_joining("c", 101)], "add c: this socket is already member 'b'"),
    ([_joining("c", 103), _joining("c", 104)], "add c: group 'q' already has a member 'c'"),
    ([_joining("c", 103, key=ENDPOINT._replace(port=53))],
     r"add c: socket udp:127.0.0.1:53 does not belong to group 'q' \(udp:127.0.0.1:4433\)"),
    ([_joining("a=b", 103)], "member name"),
    ([_joining("c", 103, weight=10001)], "weight of c"),
    ([_joining("c", 103, quic_server_id="01")], "add c: group 'q' does not route QUIC by server id"),
])
def test_a_refused_change_is_refused_whole(joining, message):
    members, live, in_array = _table((0, "a", 100), (1, "b", 101))
    with pytest.raises(InvalidInput, match=message):
        _place(members, live, in_array, [_joining("ok", 200), *joining])


def test_a_leaving_members_socket_and_name_may_join_in_the_same_change():
    members, live, in_array = _table((0, "a", 100), (1, "b", 101))
    (seat,) = _place(members, live, in_array, [_joining("b", 101)], leaving={1})
    assert (seat.index, seat.replaces) == (2, False)


def test_a_full_group_refuses_the_member_that_does_not_fit():
    members, live, in_array = _table(*[(i, f"w{i}", 100 + i) for i in range(abi.RP_MAX_MEMBERS - 1)])
    (seat,) = _place(members, live, in_array, [_joining("last", 999)])
    assert seat.index == abi.RP_MAX_MEMBERS - 1
    with pytest.raises(InvalidInput, match=f"add y: group 'q' is full \\({abi.RP_MAX_MEMBERS} members\\)"):
        _place(members, live, in_array, [_joining("x", 998), _joining("y", 999)])


def test_quic_ids_asked_first_then_own_then_the_lowest_free():
    members, live, in_array = _table((0, "a", 100), (1, "b", 101), quic_ids={0: 0, 1: 2})
    seats = _place(members, live, in_array, [_joining("c", 103), _joining("b", 111, replace=True),
                                             _joining("d", 104, quic_server_id="01")], options=QUIC)
    assert {s.joining.member.name: s.quic_server_id for s in seats} == {"c": 3, "b": 2, "d": 1}
    # A leaving member's id is free again.
    (seat,) = _place(members, live, in_array, [_joining("c", 103)], options=QUIC, leaving={0})
    assert seat.quic_server_id == 0


def test_a_quic_id_another_member_holds_is_refused():
    members, live, in_array = _table((0, "w1", 100), quic_ids={0: 11})
    taken = "register w2: QUIC server id 0b is already the id of member 'w1' in group 'q'"
    with pytest.raises(InvalidInput, match=taken):
        _place(members, live, in_array, [_joining("w2", 101, quic_server_id="0b", what="register w2")], options=QUIC)
    with pytest.raises(InvalidInput, match="write it in hex"):
        _place(members, live, in_array, [_joining("w2", 101, quic_server_id="zz")], options=QUIC)


def test_quic_server_id_alone():
    held = {"a": 0, "b": 1, "c": 3}
    assert quic_server_id(held, "d", None, 1) == 2
    assert quic_server_id(held, "c", None, 1) == 3  # its own
    assert quic_server_id(held, "c", 9, 1) == 9  # asked for: it may change its own
    assert quic_server_id({}, "a", None, 2) == 0
    with pytest.raises(InvalidInput, match="every 1-byte QUIC server id is taken"):
        quic_server_id({str(i): i for i in range(256)}, "x", None, 1)


def test_the_entry_of_a_new_member_and_of_a_replacement():
    members, live, in_array = _table((0, "a", 100))
    members[0].policy[1] = abi.RpPolicy(5, abi.RP_POLICY_PRESENT | abi.RP_POLICY_DRAINING)
    members[0].base_selections[1] = 77
    members[1].incarnation = 0xFFFFFFFF  # a freed index keeps the incarnation of its last socket
    new = entry(members[1], Seat(1, _joining("b", 101), False, True, quic_server_id=4), 123)
    assert (new.name, new.cookie, new.pid, new.fd, new.registered_ns) == (b"b", 101, 4101, 3, 123)
    assert (new.flags, new.quic_server_id, new.incarnation) == (abi.RP_MEMBER_USED | abi.RP_MEMBER_QUIC, 4, 1)
    assert new.policy[1].flags == 0, "not live until the flip"
    replaced = entry(members[0], Seat(0, _joining("a", 110), True, True), 456)
    assert (replaced.cookie, replaced.incarnation, replaced.policy[1].weight, replaced.base_selections[1]) == (
        110, 8, 5, 77)
    same = entry(members[0], Seat(0, _joining("a", 100), True, False), 789)
    assert (same.incarnation, same.pid, same.registered_ns) == (7, 4100, 789)
    assert members[0].registered_ns == 0, "the entry before is left as it was"
