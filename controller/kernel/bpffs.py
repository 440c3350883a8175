"""The bpffs mount rpctl keeps its state in: found, or mounted when allowed; and the
folders of its own in it, which no other user may enter."""

from __future__ import annotations

import ctypes
import errno
import os
import stat

from ..contract.errors import PermissionDenied, StateError, Unsupported

_libc = ctypes.CDLL(None, use_errno=True)

BPFFS_MOUNT = "/sys/fs/bpf"
# `ip netns exec` remounts /sys in a fresh mount namespace, hiding bpffs;
# the host's bpffs stays reachable through PID 1's root.
HOST_BPFFS = "/proc/1/root/sys/fs/bpf"
BPF_FS_MAGIC = 0xCAFE4A11
# rpctl's folders and pins: its user's alone.  The kernel pins with 0600 less the umask
# (BPF_OBJ_PIN); a bpffs mounted by hand (`mount -t bpf bpf /sys/fs/bpf`) is 1777, so
# anyone may make folders in it, and one made before rpctl's would be theirs.
FOLDER_MODE = 0o700
PIN_MODE = 0o600


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


def private_folder(path: str) -> None:
    """Make folder `path` (its parent must exist) for this user alone (FOLDER_MODE), or check
    the one there: it must be a folder this user owns, and is made FOLDER_MODE if it was
    more open.  Another user's folder there is refused: in a world-writable bpffs it may be
    anyone's, made to watch or rename what rpctl pins in it."""
    try:
        os.mkdir(path, FOLDER_MODE)
    except FileExistsError:
        pass
    except PermissionError:
        raise PermissionDenied(f"create {path}: permission denied (run as root)") from None
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        what = "a folder" if stat.S_ISDIR(st.st_mode) else "not a folder"
        raise StateError(
            f"{path} is {what} of uid {st.st_uid}, not of this user ({os.geteuid()}): rpctl keeps its state "
            "only in folders of its own; remove it (nothing of rpctl's is in it)"
        )
    if stat.S_IMODE(st.st_mode) != FOLDER_MODE:
        os.chmod(path, FOLDER_MODE)
