"""The bpf(2) system call through ctypes.

Commands that only read or write pinned maps use this module instead of bcc:
importing bcc maps libbcc and LLVM and costs tens of milliseconds, while a
map update is one system call.  Only the commands rpctl needs are wrapped.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os

from .bpffs import PIN_MODE

__all__ = [
    "BpfError",
    "MapInfo",
    "ProgInfo",
    "map_create",
    "map_lookup",
    "map_update",
    "map_delete",
    "map_lookup_batch",
    "map_update_batch",
    "obj_pin",
    "obj_get",
    "map_info",
    "prog_info",
    "prog_get_fd_by_id",
    "prog_load",
    "enable_stats",
    "possible_cpus",
]

# Command numbers from include/uapi/linux/bpf.h (enum bpf_cmd).
BPF_MAP_CREATE = 0
BPF_MAP_LOOKUP_ELEM = 1
BPF_MAP_UPDATE_ELEM = 2
BPF_MAP_DELETE_ELEM = 3
BPF_PROG_LOAD = 5
BPF_OBJ_PIN = 6
BPF_OBJ_GET = 7
BPF_PROG_GET_FD_BY_ID = 13
BPF_MAP_GET_FD_BY_ID = 14
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_MAP_LOOKUP_BATCH = 24
BPF_MAP_UPDATE_BATCH = 26
BPF_ENABLE_STATS = 32

# map_flags: an array whose values user space may mmap (Linux 5.5).  rpctl
# sets it for what comes with it: the values then start on a page boundary.
BPF_F_MMAPABLE = 1 << 10
BPF_F_INNER_MAP = 1 << 12  # an inner map whose size may differ from its outer map's template

# Update flags.
BPF_ANY = 0
BPF_NOEXIST = 1
BPF_EXIST = 2

# Program types and attach types used by rpctl.
PROG_TYPE_SK_REUSEPORT = 21
ATTACH_SK_REUSEPORT_SELECT = 39
ATTACH_SK_REUSEPORT_SELECT_OR_MIGRATE = 40

BPF_STATS_RUN_TIME = 0

_SYSCALL_NR = {"x86_64": 321, "aarch64": 280, "arm64": 280, "riscv64": 280, "ppc64le": 361, "s390x": 351}

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class BpfError(OSError):
    """A bpf(2) call failed; errno and the operation are kept."""

    def __init__(self, err: int, what: str):
        super().__init__(err, f"{what}: {os.strerror(err)}")
        self.what = what
        self.log = ""  # prog_load: the verifier's log


@functools.lru_cache(maxsize=None)  # every call of the syscall asks: a status of 256 groups makes thousands
def _nr() -> int:
    machine = os.uname().machine
    try:
        return _SYSCALL_NR[machine]
    except KeyError:
        raise BpfError(errno.ENOSYS, f"bpf syscall number unknown for {machine}") from None


def _bpf(cmd: int, attr: ctypes.Structure, what: str) -> int:
    ret = _libc.syscall(_nr(), cmd, ctypes.byref(attr), ctypes.sizeof(attr))
    if ret < 0:
        raise BpfError(ctypes.get_errno(), what)
    return ret


def _addr(buf) -> int:
    return ctypes.addressof(buf) if buf is not None else 0


class _MapCreateAttr(ctypes.Structure):
    _fields_ = [
        ("map_type", ctypes.c_uint32),
        ("key_size", ctypes.c_uint32),
        ("value_size", ctypes.c_uint32),
        ("max_entries", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
        ("inner_map_fd", ctypes.c_uint32),
        ("numa_node", ctypes.c_uint32),
        ("map_name", ctypes.c_char * 16),
        ("map_ifindex", ctypes.c_uint32),
        ("btf_fd", ctypes.c_uint32),
        ("btf_key_type_id", ctypes.c_uint32),
        ("btf_value_type_id", ctypes.c_uint32),
        ("btf_vmlinux_value_type_id", ctypes.c_uint32),
        ("map_extra", ctypes.c_uint64),
    ]


class _MapElemAttr(ctypes.Structure):
    _fields_ = [
        ("map_fd", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
        ("key", ctypes.c_uint64),
        ("value", ctypes.c_uint64),
        ("flags", ctypes.c_uint64),
    ]


class _BatchAttr(ctypes.Structure):
    _fields_ = [
        ("in_batch", ctypes.c_uint64),
        ("out_batch", ctypes.c_uint64),
        ("keys", ctypes.c_uint64),
        ("values", ctypes.c_uint64),
        ("count", ctypes.c_uint32),
        ("map_fd", ctypes.c_uint32),
        ("elem_flags", ctypes.c_uint64),
        ("flags", ctypes.c_uint64),
    ]


class _ObjAttr(ctypes.Structure):
    _fields_ = [
        ("pathname", ctypes.c_uint64),
        ("bpf_fd", ctypes.c_uint32),
        ("file_flags", ctypes.c_uint32),
        ("path_fd", ctypes.c_int32),
        ("_pad", ctypes.c_uint32),
    ]


class _GetIdAttr(ctypes.Structure):
    _fields_ = [
        ("id", ctypes.c_uint32),
        ("next_id", ctypes.c_uint32),
        ("open_flags", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
    ]


class _InfoAttr(ctypes.Structure):
    _fields_ = [
        ("bpf_fd", ctypes.c_uint32),
        ("info_len", ctypes.c_uint32),
        ("info", ctypes.c_uint64),
    ]


class _EnableStatsAttr(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32), ("_pad", ctypes.c_uint32 * 3)]


class _ProgLoadAttr(ctypes.Structure):
    _fields_ = [
        ("prog_type", ctypes.c_uint32),
        ("insn_cnt", ctypes.c_uint32),
        ("insns", ctypes.c_uint64),
        ("license", ctypes.c_uint64),
        ("log_level", ctypes.c_uint32),
        ("log_size", ctypes.c_uint32),
        ("log_buf", ctypes.c_uint64),
        ("kern_version", ctypes.c_uint32),
        ("prog_flags", ctypes.c_uint32),
        ("prog_name", ctypes.c_char * 16),
        ("prog_ifindex", ctypes.c_uint32),
        ("expected_attach_type", ctypes.c_uint32),
    ]


class MapInfo(ctypes.Structure):
    """The head of struct bpf_map_info (what rpctl checks)."""

    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("key_size", ctypes.c_uint32),
        ("value_size", ctypes.c_uint32),
        ("max_entries", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
        ("name", ctypes.c_char * 16),
    ]


class ProgInfo(ctypes.Structure):
    """struct bpf_prog_info up to the run-time statistics."""

    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("tag", ctypes.c_uint8 * 8),
        ("jited_prog_len", ctypes.c_uint32),
        ("xlated_prog_len", ctypes.c_uint32),
        ("jited_prog_insns", ctypes.c_uint64),
        ("xlated_prog_insns", ctypes.c_uint64),
        ("load_time", ctypes.c_uint64),
        ("created_by_uid", ctypes.c_uint32),
        ("nr_map_ids", ctypes.c_uint32),
        ("map_ids", ctypes.c_uint64),
        ("name", ctypes.c_char * 16),
        ("ifindex", ctypes.c_uint32),
        ("gpl_compatible", ctypes.c_uint32),
        ("netns_dev", ctypes.c_uint64),
        ("netns_ino", ctypes.c_uint64),
        ("nr_jited_ksyms", ctypes.c_uint32),
        ("nr_jited_func_lens", ctypes.c_uint32),
        ("jited_ksyms", ctypes.c_uint64),
        ("jited_func_lens", ctypes.c_uint64),
        ("btf_id", ctypes.c_uint32),
        ("func_info_rec_size", ctypes.c_uint32),
        ("func_info", ctypes.c_uint64),
        ("nr_func_info", ctypes.c_uint32),
        ("nr_line_info", ctypes.c_uint32),
        ("line_info", ctypes.c_uint64),
        ("jited_line_info", ctypes.c_uint64),
        ("nr_jited_line_info", ctypes.c_uint32),
        ("line_info_rec_size", ctypes.c_uint32),
        ("jited_line_info_rec_size", ctypes.c_uint32),
        ("nr_prog_tags", ctypes.c_uint32),
        ("prog_tags", ctypes.c_uint64),
        ("run_time_ns", ctypes.c_uint64),
        ("run_cnt", ctypes.c_uint64),
        ("recursion_misses", ctypes.c_uint64),
        ("verified_insns", ctypes.c_uint32),
        ("attach_btf_obj_id", ctypes.c_uint32),
        ("attach_btf_id", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
    ]


def map_create(map_type: int, key_size: int, value_size: int, max_entries: int, name: str, flags: int = 0,
               inner_map_fd: int = 0) -> int:
    """Create a map and return its fd (owned by the caller).  `inner_map_fd`:
    for an array of maps, a map of the kind its elements are."""
    attr = _MapCreateAttr(
        map_type=map_type,
        key_size=key_size,
        value_size=value_size,
        max_entries=max_entries,
        map_flags=flags,
        inner_map_fd=inner_map_fd,
        map_name=name.encode()[:15],
    )
    return _bpf(BPF_MAP_CREATE, attr, f"create map {name}")


VERIFIER_LOG_SIZE = 16 << 20


def prog_load(prog_type: int, code: bytes, attach_type: int, name: str, license: str = "GPL") -> int:
    """Load `code` (struct bpf_insn array) and return the program's fd.

    On failure the call is made again with the verifier's log, which the
    first call's BpfError then carries as .log (its last lines say why; the
    second call's own errno can be ENOSPC, a log cut short)."""
    insns = ctypes.create_string_buffer(code, len(code))
    lic = ctypes.create_string_buffer(license.encode())
    attr = _ProgLoadAttr(
        prog_type=prog_type,
        insn_cnt=len(code) // 8,
        insns=ctypes.addressof(insns),
        license=ctypes.addressof(lic),
        prog_name=name.encode()[:15],
        expected_attach_type=attach_type,
    )
    try:
        return _bpf(BPF_PROG_LOAD, attr, f"load program {name}")
    except BpfError as first:
        log = ctypes.create_string_buffer(VERIFIER_LOG_SIZE)
        attr.log_level, attr.log_size, attr.log_buf = 1, VERIFIER_LOG_SIZE, ctypes.addressof(log)
        try:
            fd = _bpf(BPF_PROG_LOAD, attr, f"load program {name}")
        except BpfError:
            first.log = log.value.decode(errors="replace")
            raise first from None
        return fd  # loaded when asked to log: keep it


def map_lookup(fd: int, key, value, what: str = "map lookup") -> bool:
    """Read one element into `value`; False when the key has no element."""
    attr = _MapElemAttr(map_fd=fd, key=_addr(key), value=_addr(value))
    try:
        _bpf(BPF_MAP_LOOKUP_ELEM, attr, what)
    except BpfError as e:
        if e.errno == errno.ENOENT:
            return False
        raise
    return True


def map_update(fd: int, key, value, flags: int = BPF_ANY, what: str = "map update") -> None:
    attr = _MapElemAttr(map_fd=fd, key=_addr(key), value=_addr(value), flags=flags)
    _bpf(BPF_MAP_UPDATE_ELEM, attr, what)


def map_delete(fd: int, key, what: str = "map delete") -> bool:
    """Delete one element; False when there was none."""
    attr = _MapElemAttr(map_fd=fd, key=_addr(key))
    try:
        _bpf(BPF_MAP_DELETE_ELEM, attr, what)
    except BpfError as e:
        if e.errno == errno.ENOENT:
            return False
        raise
    return True


def map_update_batch(fd: int, keys, values, count: int, what: str = "map batch update") -> None:
    """Write `count` elements in one call (arrays: Linux 5.6+)."""
    attr = _BatchAttr(keys=_addr(keys), values=_addr(values), count=count, map_fd=fd)
    _bpf(BPF_MAP_UPDATE_BATCH, attr, what)
    if attr.count != count:
        raise BpfError(errno.EIO, f"{what}: wrote {attr.count} of {count} elements")


def _lookup_batch(fd: int, keys, values, count: int, token: int | None, what: str) -> tuple[int, int | None]:
    """One BPF_MAP_LOOKUP_BATCH from `token` (None: the start); returns (how
    many were read, the token to go on from, None at the end of the map).
    Arrays and hash maps both take a u32 token (a key, a bucket)."""
    prev = ctypes.c_uint32(token or 0)
    out = ctypes.c_uint32(0)
    attr = _BatchAttr(
        in_batch=ctypes.addressof(prev) if token is not None else 0,
        out_batch=ctypes.addressof(out),
        keys=_addr(keys),
        values=_addr(values),
        count=count,
        map_fd=fd,
    )
    try:
        _bpf(BPF_MAP_LOOKUP_BATCH, attr, what)
    except BpfError as e:
        # ENOENT marks the end of the map: the elements reported were read.
        if e.errno != errno.ENOENT:
            raise
        return attr.count, None
    return attr.count, out.value


def map_lookup_batch(fd: int, keys, values, count: int, what: str = "map batch lookup", start: int = 0) -> int:
    """Read up to `count` elements of an array map from key `start` on; returns how many.

    For arrays the kernel resumes after the key in in_batch, so reading from
    `start` > 0 passes start - 1.
    """
    return _lookup_batch(fd, keys, values, count, start - 1 if start > 0 else None, what)[0]


def obj_pin(fd: int, path: str) -> None:
    """Pin the object at `path`, for its owner alone: the kernel gives a pin 0600 less the
    umask of whoever ran rpctl; PIN_MODE is set whatever it was."""
    p = ctypes.create_string_buffer(os.fsencode(path))
    attr = _ObjAttr(pathname=ctypes.addressof(p), bpf_fd=fd)
    _bpf(BPF_OBJ_PIN, attr, f"pin {path}")
    os.chmod(path, PIN_MODE)


def obj_get(path: str) -> int:
    p = ctypes.create_string_buffer(os.fsencode(path))
    attr = _ObjAttr(pathname=ctypes.addressof(p))
    return _bpf(BPF_OBJ_GET, attr, f"open pinned {path}")


def _info(fd: int, info: ctypes.Structure, what: str):
    attr = _InfoAttr(bpf_fd=fd, info_len=ctypes.sizeof(info), info=ctypes.addressof(info))
    _bpf(BPF_OBJ_GET_INFO_BY_FD, attr, what)
    return info


def map_info(fd: int) -> MapInfo:
    return _info(fd, MapInfo(), "read map info")


def prog_info(fd: int) -> ProgInfo:
    return _info(fd, ProgInfo(), "read program info")


def prog_get_fd_by_id(prog_id: int) -> int:
    return _bpf(BPF_PROG_GET_FD_BY_ID, _GetIdAttr(id=prog_id), f"open program id {prog_id}")


def map_get_fd_by_id(map_id: int) -> int:
    """An fd of the map with id `map_id` (what an element of an array of maps reads as)."""
    return _bpf(BPF_MAP_GET_FD_BY_ID, _GetIdAttr(id=map_id), f"open map id {map_id}")


def enable_stats() -> int:
    """Turn on run_time_ns/run_cnt accounting while the returned fd is open."""
    return _bpf(BPF_ENABLE_STATS, _EnableStatsAttr(type=BPF_STATS_RUN_TIME), "enable bpf stats")


def possible_cpus() -> int:
    """Number of possible CPUs: the stride of per-CPU map values."""
    with open("/sys/devices/system/cpu/possible") as f:
        text = f.read().strip()
    count = 0
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        count += (int(hi) if hi else int(lo)) - int(lo) + 1
    return count
