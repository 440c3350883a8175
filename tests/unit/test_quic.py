"""controller/tables/quic.py: QUIC-LB server ids, connection ids, and the generation's id table."""

from __future__ import annotations

import bisect

import pytest
from rpctl.controller.contract import abi
from rpctl.controller.contract.errors import InvalidInput
from rpctl.controller.tables import quic


@pytest.mark.parametrize("text, length, value", [
    ("0a", 1, 0x0A), ("0x0A", 1, 0x0A), ("ff", 1, 0xFF), ("0", 1, 0), ("0a01", 2, 0x0A01),
    ("1", 2, 1), ("ffffffff", 4, 0xFFFFFFFF),
])
def test_server_ids_are_read_in_hex(text, length, value):
    assert quic.parse_server_id(text, length) == value


@pytest.mark.parametrize("text, length, words", [
    ("100", 1, "longer than the group's 1-byte"), ("1ffff", 2, "longer than"), ("zz", 1, "write it in hex"),
    ("", 1, "write it in hex"), ("0x", 1, "write it in hex"), (" 1", 1, "write it in hex"), ("-1", 1, "hex"),
    ("0_1", 1, "hex"),
])
def test_bad_or_too_long_server_ids_are_refused(text, length, words):
    with pytest.raises(InvalidInput, match=words):
        quic.parse_server_id(text, length)


def test_the_text_form_has_two_digits_per_byte_and_reads_back():
    assert quic.format_server_id(0x0A, 1) == "0a"
    assert quic.format_server_id(1, 3) == "000001"
    for length in (1, 2, 4):
        assert quic.parse_server_id(quic.format_server_id(0x5A, length), length) == 0x5A


@pytest.mark.parametrize("length", [0, 5, True, "1"])
def test_lengths_outside_1_to_4_are_refused(length):
    with pytest.raises(InvalidInput, match="1..4 bytes"):
        quic.check_length(length)


def test_assign_takes_the_lowest_free_id():
    assert quic.assign([], 1) == 0
    assert quic.assign([0, 1, 3], 1) == 2
    assert quic.assign(range(255), 1) == 255
    with pytest.raises(InvalidInput, match="every 1-byte QUIC server id is taken"):
        quic.assign(range(256), 1)


@pytest.mark.parametrize("sid, cid_length", [(b"\x07", 8), (b"\x0a\x01", 8), (b"\x01\x02\x03\x04", 20), (b"\x00", 6)])
def test_connection_ids_carry_the_server_id_after_a_routable_first_octet(sid, cid_length):
    cid = quic.make_cid(sid, cid_length)
    assert len(cid) == cid_length
    assert cid[0] >> 5 == 0, "config rotation 0"
    assert cid[0] & 0x1F == cid_length - 1, "the low bits say the length that follows"
    assert quic.server_id_of(cid, len(sid)) == sid
    assert len({quic.make_cid(sid, cid_length) for _ in range(20)}) == 20, "the nonce is random"


def test_too_short_or_too_long_connection_ids_are_refused():
    with pytest.raises(InvalidInput, match="4-byte nonce"):
        quic.make_cid(b"\x01\x02", 6)
    with pytest.raises(InvalidInput, match="at most 20"):
        quic.make_cid(b"\x01", 21)


def test_unroutable_or_short_connection_ids_name_no_server():
    assert quic.server_id_of(bytes([0xE0, 7, 1, 2, 3, 4]), 1) is None
    assert quic.server_id_of(bytes([0xC0, 7, 1, 2, 3, 4]), 1) == b"\x07"  # rotation 0b110 is routable
    assert quic.server_id_of(b"\x00", 1) is None


def _program_lookup(table: list[int], sid: int):
    """What rp_quic_member in bpf/quic.h does: a lower bound in 8 fixed halvings, one compare."""
    want, pos, step = sid << 32, 0, abi.RP_MAX_MEMBERS // 2
    while step:
        if table[pos + step - 1] < want:
            pos += step
        step //= 2
    e = table[pos]
    return None if e == abi.RP_QUIC_NO_ID or e >> 32 != sid else e & 0xFFFFFFFF


def test_the_id_table_is_sorted_padded_and_found_the_programs_way():
    ids = {3: 0x0A, 0: 0xFF, 7: 0x00, 255: 0xFFFFFFFF, 9: 0x10}
    table = quic.lookup_table(ids)
    assert len(table) == abi.RP_MAX_MEMBERS and table == sorted(table)
    assert table[len(ids):] == [abi.RP_QUIC_NO_ID] * (abi.RP_MAX_MEMBERS - len(ids))
    for idx, sid in ids.items():
        assert _program_lookup(table, sid) == idx
    for missing in (1, 0x0B, 0xFE, 0xFFFFFFFE):
        assert _program_lookup(table, missing) is None
    assert all(_program_lookup(quic.lookup_table({}), s) is None for s in (0, 0xFFFFFFFF))


def test_a_full_table_finds_every_id():
    ids = {idx: 255 - idx for idx in range(abi.RP_MAX_MEMBERS)}
    table = quic.lookup_table(ids)
    assert abi.RP_QUIC_NO_ID not in table
    for idx, sid in ids.items():
        assert _program_lookup(table, sid) == idx
        assert bisect.bisect_left(table, sid << 32) == sid


def test_a_server_id_from_a_cookie_is_its_low_bytes():
    from rpctl.controller.tables.quic import of_cookie

    assert of_cookie(0x0123456789, 3) == 0x456789
    assert of_cookie(0x0123456789, 1) == 0x89
    assert of_cookie(0x0123456789, 4) == 0x23456789
