"""A group's entry program: the few instructions that lead a group's
selections to the steering program every group shares.

The shared program (store/shared_program.py) is verified once per boot;
a group gets this entry instead, which the verifier walks in microseconds.
It writes the group's slot into the per-CPU map "slot" and tail-calls
the shared program (element 0 of the program array "progs"), which reads
the slot back to find the group's maps.  Nothing runs between the two on
that CPU: both run in one invocation of the program, which neither
sleeps nor migrates.  If the tail call fails (no program in the array),
the entry returns SK_PASS without a choice: the kernel's own hash selects,
as with no program.

Written as bytecode, not C: eleven instructions need no compiler, and
loading them needs no bcc.
"""

from __future__ import annotations

import struct

from . import bpfsys

SK_PASS = 1
FUNC_MAP_LOOKUP_ELEM = 1
FUNC_TAIL_CALL = 12
NAME = "rp_entry"


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    """One struct bpf_insn: opcode, dst_reg:4 | src_reg:4 (little-endian bit-fields), off, imm."""
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def _load_map(dst: int, map_fd: int) -> bytes:
    """r<dst> = the map `map_fd` (BPF_LD_IMM64 with BPF_PSEUDO_MAP_FD: two slots)."""
    return _insn(0x18, dst, 1, 0, map_fd) + _insn(0)


def code(slot_map_fd: int, progs_fd: int, slot: int) -> bytes:
    """The entry of the group at `slot`."""
    if not 0 <= slot < 1 << 31:
        raise ValueError(f"slot {slot} out of range")
    return b"".join([
        _insn(0xBF, 6, 1),                      # r6 = ctx
        _insn(0x62, 10, 0, -4, 0),              # *(u32 *)(r10 - 4) = 0: the key
        _load_map(1, slot_map_fd),              # r1 = &slot
        _insn(0xBF, 2, 10),                     # r2 = r10
        _insn(0x07, 2, 0, 0, -4),               # r2 += -4
        _insn(0x85, imm=FUNC_MAP_LOOKUP_ELEM),  # r0 = this CPU's element
        _insn(0x15, 0, 0, 6, 0),                # if r0 == 0 goto pass (never: element 0 exists)
        _insn(0x62, 0, 0, 0, slot),             # *(u32 *)r0 = slot
        _insn(0xBF, 1, 6),                      # r1 = ctx
        _load_map(2, progs_fd),                 # r2 = &progs
        _insn(0xB7, 3, imm=0),                  # r3 = 0
        _insn(0x85, imm=FUNC_TAIL_CALL),        # the shared program; returns here only if absent
        _insn(0xB7, 0, imm=SK_PASS),            # pass: r0 = SK_PASS, no socket selected
        _insn(0x95),                            # exit
    ])


def load(slot_map_fd: int, progs_fd: int, slot: int, attach_type: int) -> int:
    """Load the entry of the group at `slot`; returns an fd the caller owns.
    `attach_type` must be the shared program's: a tail call joins programs
    of one kind only."""
    return bpfsys.prog_load(bpfsys.PROG_TYPE_SK_REUSEPORT, code(slot_map_fd, progs_fd, slot), attach_type, NAME)
