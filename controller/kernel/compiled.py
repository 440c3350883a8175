"""Compiled programs, kept: bcc's compile (clang over the kernel's headers,
about 0.7 s of CPU) runs once per program, kernel and rpctl version, not
once for every group a register, an apply or a serve creates.

The C sources name their maps by fd (-DRP_FD_<NAME>, then
bpf_pseudo_fd), and fds differ at every load.  So a program is compiled
with a placeholder number for each map, and its bytecode is kept; a load
takes a copy whose map-fd loads (BPF_LD_IMM64 with src_reg
BPF_PSEUDO_MAP_FD, what bpf_pseudo_fd emits) carry the real fds, as
libbpf's map relocations do for an ELF object.

Kept in this process, and in CACHE_DIR (or $RPCTL_PROGRAM_CACHE) for the next ones, under a key made
of everything the compile reads: the source and every header and C file
beside it and in bpf/ (loader.py names them), the function, the macros
other than fds, the kernel release, the header tree and bcc's version.
An entry that does not check out (truncated, another format) is compiled
again; a folder others can write is not used at all.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import struct
import sys
import tempfile
from typing import Callable, Collection, Mapping, Optional, Sequence

from ..contract.errors import RpctlError

CACHE_DIR = "/var/cache/rpctl/programs"
CACHE_ENV = "RPCTL_PROGRAM_CACHE"  # another folder (a read-only /var, tests)
KEEP = 32                 # entries kept on disk, most recently used first
FORMAT = b"rpctl-bpf-1\n"  # an entry: FORMAT, sha256 of the code, the code

# Placeholders for map fds: far above any fd a process holds, one per map
# name in sorted order.
PLACEHOLDER_BASE = 0x52500000

INSN_SIZE = 8
LD_IMM64 = 0x18           # BPF_LD | BPF_IMM | BPF_DW: two instruction slots
PSEUDO_MAP_FD = 1

_memo: dict[str, bytes] = {}  # key -> bytecode read or compiled by this process


def forget() -> None:
    """Forget the programs this process already read or compiled, as a new
    process starts: the next bytecode() call reads the folder or compiles."""
    _memo.clear()


def placeholders(names: Sequence[str]) -> dict[str, int]:
    """The number each map name stands for in the compile."""
    return {name: PLACEHOLDER_BASE + i for i, name in enumerate(sorted(names))}


def cache_key(source: str, headers: Sequence[str], function: str, macros: Sequence[str],
              header_tree: Optional[str], compiler: str) -> str:
    """Hex digest of every input of the compile (`headers`: the files the
    source may include)."""
    h = hashlib.sha256(FORMAT)
    for path in [source, *sorted(headers)]:
        with open(path, "rb") as f:
            data = f.read()
        h.update(b"%d:%s\n" % (len(data), os.path.basename(path).encode()))
        h.update(data)
    for part in (function, *macros, platform.release(), header_tree or "(default)", compiler):
        h.update(part.encode() + b"\0")
    return h.hexdigest()


def _src_reg(regs: int) -> int:
    # struct bpf_insn: dst_reg:4, src_reg:4, in bit-field order.
    return regs >> 4 if sys.byteorder == "little" else regs & 0xF


def with_fds(code: bytes, fds: Mapping[int, int]) -> bytes:
    """`code` with each placeholder's map-fd load set to its fd (`fds`:
    placeholder -> fd).  A map-fd load of any other number is refused: the
    bytecode was not compiled against these placeholders."""
    if len(code) % INSN_SIZE:
        raise ValueError(f"bytecode of {len(code)} bytes is not whole instructions")
    out = bytearray(code)
    i = 0
    while i < len(out):
        op, regs, _off, imm = struct.unpack_from("=BBhi", out, i)
        if op == LD_IMM64:
            if _src_reg(regs) == PSEUDO_MAP_FD:
                if imm not in fds:
                    raise ValueError(f"map-fd load of {imm:#x} at instruction {i // INSN_SIZE}: no such placeholder")
                struct.pack_into("=i", out, i + 4, fds[imm])
            i += 2 * INSN_SIZE
        else:
            i += INSN_SIZE
    return bytes(out)


def fits(code: bytes, numbers: Collection[int]) -> bool:
    """Whether `code` is whole instructions whose every map-fd load is of one of `numbers`
    (the placeholders it was compiled against): with_fds() would take it."""
    try:
        with_fds(code, {n: n for n in numbers})
    except (ValueError, struct.error):
        return False
    return True


def _usable_dir(path: str) -> bool:
    """Ours alone: owned by this user and writable by nobody else (its
    entries become programs that steer traffic)."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        st = os.stat(path)
    except OSError:
        return False
    return st.st_uid == os.geteuid() and not st.st_mode & 0o022


def read_entry(path: str) -> Optional[bytes]:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    head = len(FORMAT) + 32
    if len(data) <= head or not data.startswith(FORMAT):
        return None
    code = data[head:]
    if hashlib.sha256(code).digest() != data[len(FORMAT):head] or len(code) % INSN_SIZE:
        return None
    try:
        os.utime(path)  # most recently used: kept by _prune
    except OSError:
        pass  # a read-only folder still serves what it holds
    return code


def _write(folder: str, key: str, code: bytes) -> None:
    """Atomically (a reader sees the whole entry or none), then prune."""
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
    except OSError:
        return  # a cache that cannot be written only costs the next compile
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(FORMAT + hashlib.sha256(code).digest() + code)
        os.replace(tmp, os.path.join(folder, key))
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)  # a full disk: no partial entry left behind
        return
    _prune(folder)


def _entries(folder: str) -> list[os.DirEntry]:
    """The kept programs in `folder` (not a write under way: .tmp-*)."""
    return [e for e in os.scandir(folder) if e.is_file() and not e.name.startswith(".")]


def _prune(folder: str) -> None:
    try:
        entries = _entries(folder)
        entries.sort(key=lambda e: e.stat().st_mtime, reverse=True)
        for e in entries[KEEP:]:
            os.unlink(e.path)
    except OSError:
        pass


def folder_in_use() -> str:
    return os.environ.get(CACHE_ENV) or CACHE_DIR


def kept() -> tuple[bool, str]:
    """For doctor: whether compiled programs can be kept, and how many are."""
    folder = folder_in_use()
    if not _usable_dir(folder):
        return False, f"{folder} is not this user's alone, or cannot be made: every new group compiles (about 1 s)"
    return True, f"{len(_entries(folder))} kept in {folder}"


def bytecode(key: str, compile_program: Callable[[], bytes], folder: Optional[str] = None,
             check: Optional[Callable[[bytes], bool]] = None) -> bytes:
    """The program of `key`: from this process, from the folder, or from
    `compile_program()` (then kept in both).  An entry of the folder that
    `check` refuses (its map loads are not this compile's: fits()) is
    compiled again, as a damaged one is."""
    folder = folder or folder_in_use()
    code = _memo.get(key)
    if code is not None:
        return code
    usable = _usable_dir(folder)
    code = read_entry(os.path.join(folder, key)) if usable else None
    if code is not None and check is not None and not check(code):
        code = None
    if code is None:
        code = compile_program()
        if not code or len(code) % INSN_SIZE:
            raise RpctlError(f"the compiler returned {len(code)} bytes of bytecode: not a program")
        if usable:
            _write(folder, key, code)
    _memo[key] = code
    return code
