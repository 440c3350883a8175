"""controller/kernel/entry_program.py: a group's entry, as bytecode: its slot, its two maps, its jumps."""

from __future__ import annotations

import struct

import pytest
from rpctl.controller.kernel import entry_program


def insns(code: bytes) -> list[tuple[int, int, int, int, int]]:
    """(opcode, dst, src, off, imm) of each 8-byte slot."""
    out = []
    for i in range(0, len(code), 8):
        op, regs, off, imm = struct.unpack_from("<BBhi", code, i)
        out.append((op, regs & 0xF, regs >> 4, off, imm))
    return out


def test_the_entry_writes_its_slot_and_tail_calls_through_the_program_array():
    code = insns(entry_program.code(slot_map_fd=41, progs_fd=42, slot=1234))
    assert len(code) == 16
    loads = [(dst, imm) for op, dst, src, _, imm in code if op == 0x18 and src == 1]
    assert loads == [(1, 41), (2, 42)], "the slot map for the lookup, the program array for the tail call"
    stores = [(dst, off, imm) for op, dst, _, off, imm in code if op == 0x62]
    assert stores == [(10, -4, 0), (0, 0, 1234)], "key 0 on the stack, then the slot into the element"
    calls = [imm for op, *_, imm in code if op == 0x85]
    assert calls == [entry_program.FUNC_MAP_LOOKUP_ELEM, entry_program.FUNC_TAIL_CALL]
    assert code[-2] == (0xB7, 0, 0, 0, entry_program.SK_PASS) and code[-1][0] == 0x95


def test_a_missing_element_jumps_to_the_pass_at_the_end():
    code = insns(entry_program.code(3, 4, 0))
    (at,) = [i for i, c in enumerate(code) if c[0] == 0x15]
    assert at + 1 + code[at][3] == len(code) - 2


@pytest.mark.parametrize("slot", [-1, 1 << 31])
def test_a_slot_out_of_range_is_refused(slot):
    with pytest.raises(ValueError, match="out of range"):
        entry_program.code(3, 4, slot)
