"""Enter a fresh network namespace for a test or a benchmark.

The calling thread enters the namespace (setns), so the sockets it makes,
the threads it starts afterwards and the processes it spawns all live there.
Plain module (no pytest) so that bench/ uses the same code as the tests.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import shutil
import subprocess
from typing import Callable, Iterator, TypeVar

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
_counter = itertools.count()
T = TypeVar("T")


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def unload_all() -> None:
    """Remove every rpctl group of the current namespace."""
    from rpctl.controller.contract.errors import RpctlError
    from rpctl.controller.store import group
    from rpctl.controller.store.state import Layout

    for name in Layout().groups():
        try:
            group.unload(group=name, force=True)
        except RpctlError:
            pass


def run_in(name: str, fn: Callable[[], T]) -> T:
    """fn() on a thread of its own that enters namespace `name` (/run/netns/NAME) first;
    the calling thread stays where it is."""
    from rpctl.controller.store.state import in_netns

    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        return in_netns(fd, fn)
    finally:
        os.close(fd)


@contextlib.contextmanager
def fresh_netns(prefix: str = "rpctl-t") -> Iterator[str]:
    """A new namespace with loopback up, entered for the block; yields its name."""
    name = f"{prefix}{os.getpid()}-{next(_counter)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{name}", os.O_RDONLY)
    ns_dir = None
    try:
        _setns(target)
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        from rpctl.controller.store.state import Layout

        ns_dir = Layout().ns_dir
        yield name
    finally:
        # Pinned state is keyed by the namespace's cookie; never leave it
        # behind for a later namespace to trip over.
        if ns_dir:
            unload_all()
            shutil.rmtree(ns_dir, ignore_errors=True)
        _setns(home)
        os.close(home)
        os.close(target)
        subprocess.run(["ip", "netns", "del", name], check=False)


def namespace_with_a_group(name: str) -> str:
    """`ip netns add NAME`, a group made there (its member's socket then closed, as
    after its server stopped); returns the namespace's state folder."""
    from rpctl.controller.store.state import Layout

    from tests.support.traffic import Members

    subprocess.run(["ip", "netns", "add", name], check=True)

    def make() -> str:
        members = Members()
        members.add()
        members.register_all()
        members.close()
        return Layout().ns_dir

    return run_in(name, make)


def drop_netns(name: str) -> None:
    """`ip netns del NAME`, quietly (it may be gone already)."""
    subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
