"""Typed access to the maps of a group, through the bpf syscall.

Opening a pinned map checks its type, key size, value size and capacity
against abi.GROUP_MAPS and refuses a mismatch: reading a map of another
shape would return garbage, and writing it could break steering.
"""

from __future__ import annotations

import array
import ctypes
import os
from typing import Collection, Optional, Type, TypeVar

from ..contract import abi
from ..contract.errors import StateError
from ..contract.refs import Param
from . import bpfsys

T = TypeVar("T", bound=ctypes.Structure)

_NCPUS: Optional[int] = None


def _ncpus() -> int:
    global _NCPUS
    if _NCPUS is None:
        _NCPUS = bpfsys.possible_cpus()
    return _NCPUS


def array_flags(map_type: int) -> int:
    """The creation flags of a map: BPF_F_MMAPABLE for a plain array.

    rpctl never maps one; it wants the layout that comes with the flag.  A
    plain array's values begin 312 bytes into its allocation (Linux 6.18),
    56 bytes into a cache line, so the 64-byte ctl element and every
    128-byte set of the flow table straddle a line more than they need to:
    reading ctl's gen and flags, or a flow in a set's first way, takes two
    lines where one would do.  A mappable array's values begin on a page.
    What that saves was below what this test machine can tell apart (the
    datapath benchmark's "unaligned" rows, docs/benchmarks.md); it costs
    nothing.  A group made without it still works as it was."""
    return bpfsys.BPF_F_MMAPABLE if map_type == abi.MAP_TYPE_ARRAY else 0


def creation_flags(spec: abi.MapSpec, entries: int) -> int:
    """array_flags(), and BPF_F_INNER_MAP for a map sized at creation to
    other than the default flow table's size: the shared program reaches
    every group's map of a name through one array of maps, whose elements
    must have the flags of its template, and a size other than the
    template's only with this flag; a lookup in a map that has it is a call,
    not inlined, so tables of the default size are kept apart without it
    (store/shared_program.py)."""
    flags = array_flags(spec.map_type)
    if spec.max_entries == abi.SIZED_AT_CREATION and entries != abi.FLOW_SETS_DEFAULT:
        flags |= bpfsys.BPF_F_INNER_MAP
    return flags


class Map:
    """One BPF map, owned fd included."""

    def __init__(self, fd: int, spec: abi.MapSpec):
        self.fd = fd
        self.spec = spec

    @classmethod
    def create(cls, spec: abi.MapSpec, max_entries: Optional[int] = None) -> "Map":
        """max_entries: the size of a map sized at creation (abi.SIZED_AT_CREATION)."""
        entries = spec.max_entries if spec.max_entries != abi.SIZED_AT_CREATION else max_entries
        if not entries:
            raise ValueError(f"map {spec.name}: its size is set at creation and none was given")
        fd = bpfsys.map_create(spec.map_type, spec.key_size, spec.value_size, entries, "rp_" + spec.name,
                               creation_flags(spec, entries))
        return cls(fd, spec)

    @classmethod
    def open_id(cls, map_id: int, spec: abi.MapSpec) -> "Map":
        """The map with id `map_id`, taken to be of `spec` (the caller made it so)."""
        return cls(bpfsys.map_get_fd_by_id(map_id), spec)

    @classmethod
    def open_pinned(cls, path: str, spec: abi.MapSpec) -> "Map":
        fd = bpfsys.obj_get(path)
        try:
            info = bpfsys.map_info(fd)
            got = (info.type, info.key_size, info.value_size, info.max_entries)
            # A map sized at creation: its group's ctl says the size (Group.open checks it).
            entries = info.max_entries if spec.max_entries == abi.SIZED_AT_CREATION else spec.max_entries
            want = (spec.map_type, spec.key_size, spec.value_size, entries)
            if got != want:
                raise StateError(
                    f"open {path}: map is (type, key, value, entries) {got}, this rpctl expects {want}; "
                    "it was made by another rpctl version: unload its group with ", Param("force", flag=True),
                    " (its program is detached) to make it anew",
                )
        except BaseException:
            os.close(fd)
            raise
        return cls(fd, spec)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def pin(self, path: str) -> None:
        bpfsys.obj_pin(self.fd, path)

    # Single elements -------------------------------------------------

    def get(self, key: int, value_type: Type[T]) -> Optional[T]:
        value = value_type()
        ok = bpfsys.map_lookup(self.fd, ctypes.c_uint32(key), value, f"read {self.spec.name}[{key}]")
        return value if ok else None

    def put(self, key: int, value: ctypes._SimpleCData | ctypes.Structure, flags: int = bpfsys.BPF_ANY) -> None:
        bpfsys.map_update(self.fd, ctypes.c_uint32(key), value, flags, f"write {self.spec.name}[{key}]")

    def delete(self, key: int) -> bool:
        return bpfsys.map_delete(self.fd, ctypes.c_uint32(key), f"delete {self.spec.name}[{key}]")

    # Whole arrays ----------------------------------------------------

    def read_structs(self, value_type: Type[T], count: int) -> list[T]:
        """Elements 0..count-1 of an array map in one system call."""
        keys = (ctypes.c_uint32 * count)()
        values = (value_type * count)()
        got = bpfsys.map_lookup_batch(self.fd, keys, values, count, f"read {self.spec.name}")
        if got != count:
            raise StateError(f"read {self.spec.name}: got {got} of {count} elements")
        return list(values)

    def read_bytes(self, value_type: Type[ctypes.Structure], count: int) -> bytes:
        """Elements 0..count-1 of an array map, end to end, in one system call:
        callers unpack them with struct, which keeps a walk of 16,384
        flow sets in milliseconds where ctypes objects would take tens."""
        keys = (ctypes.c_uint32 * count)()
        values = ctypes.create_string_buffer(ctypes.sizeof(value_type) * count)
        got = bpfsys.map_lookup_batch(self.fd, keys, values, count, f"read {self.spec.name}")
        if got != count:
            raise StateError(f"read {self.spec.name}: got {got} of {count} elements")
        return values.raw

    def write_u32s(self, start: int, data: array.array) -> None:
        """Write a run of u32 values in one system call (the data-path
        benchmark fills its wide slot table, rpctl's table before decision 0005)."""
        count = len(data)
        keys = (ctypes.c_uint32 * count).from_buffer(array.array("I", range(start, start + count)))
        values = (ctypes.c_uint32 * count).from_buffer_copy(data.tobytes())
        bpfsys.map_update_batch(self.fd, keys, values, count, f"write {self.spec.name}")

    def clear(self, entries: int) -> None:
        """Every element of elements 0..entries-1 back to its state at
        creation: zeros, or no socket in a socket array (which has no batch
        writes: one delete per element)."""
        if self.spec.map_type == abi.MAP_TYPE_REUSEPORT_SOCKARRAY:
            for key in range(entries):
                self.delete(key)
            return
        width = (self.spec.value_size + 7) & ~7 if self.spec.map_type == abi.MAP_TYPE_PERCPU_ARRAY else 0
        size = width * _ncpus() if width else self.spec.value_size
        keys = (ctypes.c_uint32 * entries)(*range(entries))
        zeros = ctypes.create_string_buffer(size * entries)
        bpfsys.map_update_batch(self.fd, keys, zeros, entries, f"clear {self.spec.name}")

    def read_percpu(self, key: int, value_type: Type[T]) -> list[T]:
        """One element of a per-CPU map: a value per possible CPU."""
        stride = (ctypes.sizeof(value_type) + 7) & ~7
        buf = ctypes.create_string_buffer(stride * _ncpus())
        if not bpfsys.map_lookup(self.fd, ctypes.c_uint32(key), buf, f"read {self.spec.name}[{key}]"):
            return []
        return [value_type.from_buffer_copy(buf.raw, cpu * stride) for cpu in range(_ncpus())]

    def read_percpu_all(self, value_type: Type[T], count: int,
                        indexes: Optional[Collection[int]] = None) -> list[list[T]]:
        """Elements 0..count-1 of a per-CPU array map, one call.  Given `indexes`, only those
        elements are decoded and the others are empty lists (a reader of a few members of
        a 256-entry map decodes a few)."""
        stride = (ctypes.sizeof(value_type) + 7) & ~7
        ncpus = _ncpus()
        keys = (ctypes.c_uint32 * count)()
        buf = ctypes.create_string_buffer(stride * ncpus * count)
        got = bpfsys.map_lookup_batch(self.fd, keys, buf, count, f"read {self.spec.name}")
        if got != count:
            raise StateError(f"read {self.spec.name}: got {got} of {count} elements")
        raw = buf.raw
        return [
            [value_type.from_buffer_copy(raw, (i * ncpus + cpu) * stride) for cpu in range(ncpus)]
            if indexes is None or i in indexes else []
            for i in range(count)
        ]

