"""Where a group's state lives in bpffs, and who may write it when.

Layout: /sys/fs/bpf/rpctl/<netns>/<group>/{prog,socks,ctl,gens,slots,...}
where <netns> is "netns<cookie>" of the caller's network namespace (its
SO_NETNS_COOKIE; "net<inode>" before Linux 5.14), so groups of different
namespaces never collide (as tubular does).

A group folder is created whole or not at all: it is filled under a
temporary name and renamed into place.  Writers to one group hold an
exclusive flock on its folder; creating or removing a group holds one on
the namespace folder.  Locks die with their process, so a SIGKILLed
writer never leaves a group locked.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import re
import shutil
import socket
import threading
from typing import Callable, Iterator, Optional, TypeVar

from ..contract.errors import InvalidInput, NotFound
from ..kernel import bpffs
from ..kernel.sockets import process_exists

# bpffs refuses names with a dot (reserved by the kernel).
GROUP_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")  # whole names: fullmatch

_libc = ctypes.CDLL(None, use_errno=True)


SO_NETNS_COOKIE = 71
CLONE_NEWNET = 0x40000000
T = TypeVar("T")


def netns_id() -> str:
    """A name for the caller's network namespace.

    The namespace cookie (Linux 5.14+) is never reused, unlike the inode
    of /proc/self/ns/net: a new namespace that got a dead one's inode
    would otherwise find the dead one's pinned groups.
    """
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            cookie = int.from_bytes(s.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8), "little")
        return f"netns{cookie}"
    except OSError:
        return f"net{os.stat('/proc/self/ns/net').st_ino}"


def in_netns(fd: int, fn: Callable[[], T]) -> T:
    """fn() on a thread of its own that first enters the network namespace `fd` opens
    (setns moves only the calling thread, and this one ends with fn).  Returns what
    fn returns; raises what it raises, or OSError when the namespace cannot be entered."""
    out: list = []

    def enter() -> None:
        try:
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns: {os.strerror(err)}")
            out.append((True, fn()))
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            out.append((False, e))

    t = threading.Thread(target=enter, name="rpctl-netns")
    t.start()
    t.join()
    ok, value = out[0]
    if not ok:
        raise value
    return value


def check_group_name(name: str) -> str:
    if not GROUP_NAME_RE.fullmatch(name):
        raise InvalidInput(
            f"group name {name!r}: use 1-63 letters, digits, '_' or '-', starting with a letter or digit"
        )
    return name


class Layout:
    """Paths of one namespace's state."""

    def __init__(self, root: Optional[str] = None, netns: Optional[str] = None):
        self.bpffs = root if root is not None else bpffs.bpffs_root()
        self.netns = netns if netns is not None else netns_id()
        self.ns_dir = os.path.join(self.bpffs, "rpctl", self.netns)

    def group_dir(self, group: str) -> str:
        return os.path.join(self.ns_dir, check_group_name(group))

    def groups(self) -> list[str]:
        """Groups of this namespace, by name (temporary folders left out)."""
        try:
            names = os.listdir(self.ns_dir)
        except FileNotFoundError:
            return []
        return sorted(n for n in names if GROUP_NAME_RE.fullmatch(n))

    def ensure_ns_dir(self) -> None:
        """Make (or check) rpctl's folder and this namespace's in it, both root's alone."""
        bpffs.private_folder(os.path.dirname(self.ns_dir))
        bpffs.private_folder(self.ns_dir)

    @contextlib.contextmanager
    def ns_lock(self) -> Iterator[None]:
        """Exclusive lock for creating or removing groups of this namespace."""
        self.ensure_ns_dir()
        with folder_lock(self.ns_dir):
            yield

    @contextlib.contextmanager
    def group_lock(self, group: str) -> Iterator[None]:
        """Exclusive lock for writing one group."""
        path = self.group_dir(group)
        try:
            with folder_lock(path):
                yield
        except FileNotFoundError:
            raise NotFound(f"no group {group!r} in this network namespace") from None

    def temp_dir(self, group: str) -> str:
        return os.path.join(self.ns_dir, f"_tmp-{group}-{os.getpid()}")

    def remove_group_dir(self, group: str) -> None:
        """Unpin a group: renamed away first so readers never see half of it."""
        path = self.group_dir(group)
        doomed = os.path.join(self.ns_dir, f"_del-{group}-{os.getpid()}")
        os.rename(path, doomed)
        shutil.rmtree(doomed)

    def sweep_temp_dirs(self) -> None:
        """Remove folders left by writers that died mid-create or mid-remove."""
        try:
            names = os.listdir(self.ns_dir)
        except FileNotFoundError:
            return
        for name in names:
            m = re.match(r"^_(tmp|del)-.+-(\d+)$", name)
            if m and not process_exists(int(m.group(2))):
                shutil.rmtree(os.path.join(self.ns_dir, name), ignore_errors=True)


class FolderMade:
    """A bpffs folder made whole or not at all: its maps (`maps`) and program
    (`prog_fd`), set in the block, pinned under a temporary name and renamed
    into place by done(); if the block fails, the temporary folder goes.
    Either way the maps and program are closed (their pins hold them)."""

    def __init__(self, tmp: str, final: str, prog_pin: str):
        self.tmp, self.final, self.prog_pin = tmp, final, prog_pin
        self.maps: dict = {}
        self.prog_fd = -1

    def __enter__(self) -> "FolderMade":
        os.mkdir(self.tmp, 0o700)
        return self

    def done(self) -> None:
        """Pin every map by its spec's name and the program, then rename the folder into place."""
        from ..kernel import bpfsys

        for m in self.maps.values():
            m.pin(os.path.join(self.tmp, m.spec.name))
        bpfsys.obj_pin(self.prog_fd, os.path.join(self.tmp, self.prog_pin))
        os.rename(self.tmp, self.final)

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
        for m in self.maps.values():
            m.close()
        if self.prog_fd >= 0:
            os.close(self.prog_fd)


@contextlib.contextmanager
def folder_lock(path: str) -> Iterator[None]:
    """An exclusive flock on folder `path` for the block (it dies with its process)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
