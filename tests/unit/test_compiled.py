"""Kept compiled programs (controller/kernel/compiled.py): the fd patching, the key,
and the folder's entries, without bcc or privileges."""

from __future__ import annotations

import hashlib
import os
import struct

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from rpctl.controller.contract.errors import RpctlError
from rpctl.controller.kernel import compiled

from tests.support import hostile


def insn(op: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("=BBhi", op, (src << 4) | dst, off, imm)


MOV_R0_0 = insn(0xB7)                  # r0 = 0
EXIT = insn(0x95)


def ld_map_fd(dst: int, fd: int) -> bytes:
    """r<dst> = map[fd]: BPF_LD_IMM64 with src_reg BPF_PSEUDO_MAP_FD, then its second slot."""
    return insn(compiled.LD_IMM64, dst, compiled.PSEUDO_MAP_FD, imm=fd) + insn(0)


def test_placeholders_follow_sorted_names_above_any_fd():
    p = compiled.placeholders(["socks", "ctl", "gens"])
    assert list(p) == ["ctl", "gens", "socks"]
    assert sorted(p.values()) == list(p.values()) and min(p.values()) > 1 << 20


def test_with_fds_sets_every_map_load_and_nothing_else():
    ctl, socks = compiled.PLACEHOLDER_BASE, compiled.PLACEHOLDER_BASE + 1
    # An ordinary 64-bit constant whose value equals a placeholder is no map load.
    constant = insn(compiled.LD_IMM64, 3, 0, imm=ctl) + insn(0)
    code = ld_map_fd(1, ctl) + MOV_R0_0 + constant + ld_map_fd(2, socks) + ld_map_fd(1, ctl) + EXIT
    out = compiled.with_fds(code, {ctl: 7, socks: 9})
    assert len(out) == len(code)
    loads = [struct.unpack_from("=BBhi", out, at) for at in range(0, len(out), 8)]
    assert [(op, imm) for op, _, _, imm in loads] == [
        (0x18, 7), (0, 0), (0xB7, 0), (0x18, ctl), (0, 0), (0x18, 9), (0, 0), (0x18, 7), (0, 0), (0x95, 0)]
    assert code.count(struct.pack("=i", ctl)) == 3, "the input is left as it was"


def test_with_fds_refuses_a_map_load_of_no_placeholder():
    with pytest.raises(ValueError, match="no such placeholder"):
        compiled.with_fds(ld_map_fd(1, 42) + EXIT, {compiled.PLACEHOLDER_BASE: 7})
    with pytest.raises(ValueError, match="not whole instructions"):
        compiled.with_fds(EXIT + b"\0", {})


@pytest.fixture
def source(tmp_path):
    src = tmp_path / "prog.bpf.c"
    src.write_text('#include "rpctl.h"\nint f(void *ctx) { return 1; }\n')
    header = tmp_path / "rpctl.h"
    header.write_text("#define X 1\n")
    return src, header


def key_of(src, header, **over) -> str:
    args = dict(function="f", macros=["-DRP_FD_CTL=1"], header_tree=None, compiler="0.26.0")
    args.update(over)
    return compiled.cache_key(str(src), [str(header)], args["function"], args["macros"], args["header_tree"],
                              args["compiler"])


def test_the_key_changes_with_every_input_of_the_compile(source):
    src, header = source
    base = key_of(src, header)
    assert key_of(src, header) == base
    others = {key_of(src, header, function="g"), key_of(src, header, macros=["-DRP_FD_CTL=1", "-DRP_HAVE_MIGRATE"]),
              key_of(src, header, header_tree="/usr/src/tree"), key_of(src, header, compiler="0.27.0")}
    header.write_text("#define X 2\n")
    others.add(key_of(src, header))
    header.write_text("#define X 1\n")
    src.write_text(src.read_text() + "\n")
    others.add(key_of(src, header))
    assert base not in others and len(others) == 6


def compile_counting(code: bytes, calls: list):
    def compile_program() -> bytes:
        calls.append(1)
        return code
    return compile_program


def test_a_program_is_compiled_once_then_read_back_from_the_folder(tmp_path, monkeypatch):
    compiled.forget()
    folder = tmp_path / "programs"
    calls: list = []
    code = MOV_R0_0 + EXIT
    assert compiled.bytecode("k1", compile_counting(code, calls), str(folder)) == code
    assert compiled.bytecode("k1", compile_counting(code, calls), str(folder)) == code
    assert len(calls) == 1
    assert oct(folder.stat().st_mode & 0o777) == "0o700"
    # Another process: nothing in memory, the entry on disk.
    compiled.forget()
    assert compiled.bytecode("k1", compile_counting(b"", calls), str(folder)) == code
    assert len(calls) == 1


@pytest.mark.parametrize("damage", ["truncate", "flip", "format"])
def test_a_damaged_entry_is_compiled_again(tmp_path, monkeypatch, damage):
    compiled.forget()
    folder = tmp_path / "programs"
    code = MOV_R0_0 + EXIT
    compiled.bytecode("k1", lambda: code, str(folder))
    entry = folder / "k1"
    data = bytearray(entry.read_bytes())
    if damage == "truncate":
        data = data[:-3]
    elif damage == "flip":
        data[-1] ^= 1
    else:
        data[:len(compiled.FORMAT)] = b"rpctl-bpf-0\n"
    entry.write_bytes(bytes(data))
    compiled.forget()
    calls: list = []
    assert compiled.bytecode("k1", compile_counting(code, calls), str(folder)) == code
    assert calls == [1]
    assert compiled.read_entry(str(entry)) == code, "the entry was written again, whole"


def test_a_folder_others_can_write_is_not_used(tmp_path, monkeypatch):
    compiled.forget()
    folder = tmp_path / "programs"
    folder.mkdir()
    os.chmod(folder, 0o777)
    compiled.bytecode("k1", lambda: MOV_R0_0 + EXIT, str(folder))
    assert list(folder.iterdir()) == []
    # Not even read: an entry planted there is not what gets loaded.
    (folder / "k2").write_bytes(b"planted")
    compiled.forget()
    assert compiled.bytecode("k2", lambda: EXIT, str(folder)) == EXIT


def test_the_folder_keeps_the_most_recently_used_entries(tmp_path, monkeypatch):
    compiled.forget()
    monkeypatch.setattr(compiled, "KEEP", 3)
    folder = tmp_path / "programs"
    for i in range(5):
        compiled.bytecode(f"k{i}", lambda: EXIT, str(folder))
        os.utime(folder / f"k{i}", (1000 + i, 1000 + i))
    assert sorted(p.name for p in folder.iterdir()) == ["k2", "k3", "k4"]


def test_what_is_not_bytecode_is_refused(tmp_path, monkeypatch):
    compiled.forget()
    with pytest.raises(RpctlError, match="not a program"):
        compiled.bytecode("k1", lambda: b"\0" * 12, str(tmp_path / "programs"))


def test_an_entry_that_cannot_be_written_leaves_nothing_behind(tmp_path, monkeypatch):
    compiled.forget()
    folder = tmp_path / "programs"

    def full_disk(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(compiled.os, "replace", full_disk)
    assert compiled.bytecode("k1", lambda: EXIT, str(folder)) == EXIT
    assert list(folder.iterdir()) == []


def test_doctor_says_how_many_are_kept_or_why_none_can_be(tmp_path, monkeypatch):
    folder = tmp_path / "programs"
    monkeypatch.setenv(compiled.CACHE_ENV, str(folder))
    compiled.forget()
    compiled.bytecode("k1", lambda: EXIT)
    assert compiled.kept() == (True, f"1 kept in {folder}")
    os.chmod(folder, 0o777)
    usable, detail = compiled.kept()
    assert not usable and "every new group compiles" in detail


# Hostile entries: any damage to a kept program, and entries whole but not this compile's -------------

PROGRAM = ld_map_fd(1, compiled.PLACEHOLDER_BASE) + MOV_R0_0 + ld_map_fd(2, compiled.PLACEHOLDER_BASE + 1) + EXIT
HOLDERS = (compiled.PLACEHOLDER_BASE, compiled.PLACEHOLDER_BASE + 1)
ENTRY = compiled.FORMAT + hashlib.sha256(PROGRAM).digest() + PROGRAM


def _kept(folder, raw: bytes) -> tuple[bytes, list]:
    """bytecode() of an entry holding `raw`, as a new process reads it, and the calls to the compiler."""
    folder.mkdir(mode=0o700, exist_ok=True)
    (folder / "k1").write_bytes(raw)
    compiled.forget()
    calls: list = []
    code = compiled.bytecode("k1", compile_counting(PROGRAM, calls), str(folder),
                             check=lambda kept: compiled.fits(kept, HOLDERS))
    assert compiled.fits(code, HOLDERS) and compiled.read_entry(str(folder / "k1")) == code
    return code, calls


@given(hostile.mutated(ENTRY))
def test_a_damaged_entry_is_compiled_again_whatever_the_damage(tmp_path_factory, raw):
    code, calls = _kept(tmp_path_factory.mktemp("programs"), raw)
    assert code == PROGRAM and calls == ([] if raw == ENTRY else [1]), "compiled again, and kept whole again"


@given(st.lists(st.sampled_from([MOV_R0_0, EXIT]) | st.integers(0, 2**32 - 1).map(
    lambda n: ld_map_fd(1, n - 2**31)) | st.binary(min_size=8, max_size=8), max_size=8).map(b"".join))
@example(ld_map_fd(1, 3) + EXIT)  # a map load of fd 3: compiled by no rpctl of these placeholders
def test_a_whole_entry_of_another_compile_is_compiled_again(tmp_path_factory, code):
    got, calls = _kept(tmp_path_factory.mktemp("programs"), compiled.FORMAT + hashlib.sha256(code).digest() + code)
    if code and compiled.fits(code, HOLDERS):
        assert (got, calls) == (code, [])
    else:
        assert (got, calls) == (PROGRAM, [1])
