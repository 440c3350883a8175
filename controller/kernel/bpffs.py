"""The bpffs mount rpctl keeps its state in: found, or mounted when allowed."""

from __future__ import annotations

import ctypes
import errno
import os

from ..contract.errors import PermissionDenied, Unsupported

_libc = ctypes.CDLL(None, use_errno=True)

BPFFS_MOUNT = "/sys/fs/bpf"
# `ip netns exec` remounts /sys in a fresh mount namespace, hiding bpffs;
# the host's bpffs stays reachable through PID 1's root.
HOST_BPFFS = "/proc/1/root/sys/fs/bpf"
BPF_FS_MAGIC = 0xCAFE4A11


class _Statfs(ctypes.Structure):
    _fields_ = [("f_type", ctypes.c_long), ("_rest", ctypes.c_byte * 112)]


def is_bpffs(path: str) -> bool:
    buf = _Statfs()
    if _libc.statfs(os.fsencode(path), ctypes.byref(buf)) != 0:
        return False
    return (buf.f_type & 0xFFFFFFFF) == BPF_FS_MAGIC


def _same_mount_ns_as_init() -> bool:
    try:
        return os.stat("/proc/self/ns/mnt").st_ino == os.stat("/proc/1/ns/mnt").st_ino
    except OSError:
        return True


def bpffs_root(mount: bool = True) -> str:
    """The bpffs mount rpctl keeps its state in, mounting it when allowed."""
    if is_bpffs(BPFFS_MOUNT):
        return BPFFS_MOUNT
    if not _same_mount_ns_as_init() and is_bpffs(HOST_BPFFS):
        return HOST_BPFFS
    if not mount:
        raise Unsupported(f"bpffs is not mounted at {BPFFS_MOUNT}: run `mount -t bpf bpf {BPFFS_MOUNT}`")
    if not _same_mount_ns_as_init():
        # A bpffs mounted in a private mount namespace dies with it and
        # takes the pins along: steering would go on with no way to reach it.
        raise Unsupported(
            f"bpffs is not mounted at {BPFFS_MOUNT} and this process runs in a private mount namespace: "
            f"mount it on the host (`mount -t bpf bpf {BPFFS_MOUNT}`) or enter the network namespace "
            "with `nsenter --net=/run/netns/NAME` instead of `ip netns exec`"
        )
    os.makedirs(BPFFS_MOUNT, exist_ok=True)
    if _libc.mount(b"bpf", BPFFS_MOUNT.encode(), b"bpf", 0, b"mode=0700") != 0:
        err = ctypes.get_errno()
        if err == errno.EPERM:
            raise PermissionDenied(
                f"bpffs is not mounted at {BPFFS_MOUNT} and mounting it needs root: "
                f"run `mount -t bpf bpf {BPFFS_MOUNT}` as root"
            )
        raise Unsupported(f"mount bpffs at {BPFFS_MOUNT}: {os.strerror(err)}")
    return BPFFS_MOUNT
