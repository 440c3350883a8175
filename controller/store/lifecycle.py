"""A group made and unmade: created whole or not at all, unloaded, and the member sockets it reaches.

create() fills a temporary bpffs folder (maps, the loaded program, its
pins) and renames it into place; opened_or_created() is the group a
membership write goes to, created first when the first members of an
endpoint arrive, and removed again when they cannot join.  unload()
detaches the program through a member's socket and removes the folder:
the workers' sockets stay as they are and go back to the kernel's own
selection.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import time
from typing import Iterable, Iterator, Optional

from ..contract import abi
from ..contract.errors import RpctlError, StateError
from ..contract.refs import Param
from ..kernel import bpfsys, jiffies, probe, sockets
from ..kernel.maps import Map
from . import audit, foreign_state, shared_program
from .generation import PROG_PIN, Group, read_ctl
from .lookup import resolve_group
from .options import GroupOptions
from .state import FolderMade, Layout

OWN_PROGRAM_ENV = "RPCTL_OWN_PROGRAM"  # "1": a group's program runs every step itself


def create(layout: Layout, name: str, info: sockets.SocketInfo, options: Optional[GroupOptions] = None) -> None:
    """Create and pin a group's maps and program under a temporary name,
    then rename the folder into place: all or nothing.  `info`: a socket of
    the endpoint it steers; `options`: those given (None: the defaults for
    the socket's protocol).  The caller holds the namespace's lock.

    The group's program holds the short cut and hands the rest to the
    program this boot's groups share (shared_program.py, decision 0017);
    with RPCTL_OWN_PROGRAM=1 its program runs every step itself, as before
    (for comparison: the benchmarks measure one against the other)."""
    from ..kernel import loader

    options = (options or GroupOptions()).resolved(info.proto)
    # A group without flow affinity keeps a one-set table: the program is
    # the same for every group and names the map.
    flow_sets = max(1, options.flow_table_size // abi.RP_FLOW_WAYS)
    migrate = loader.migration_wanted()
    ctl = abi.RpCtl(
        abi_version=abi.RP_ABI_VERSION,
        gen=0,
        proto=info.proto,
        family=info.family,
        port=info.port,
        created_ns=time.time_ns(),
        flags=abi.RP_CTL_MIGRATE if migrate else 0,
    )
    ctypes.memmove(ctl.addr, sockets.addr_bytes(info), 16)
    options.write_ctl(ctl, jiffies.hz() if options.flow_affinity else 0)

    with FolderMade(layout.temp_dir(name), layout.group_dir(name), PROG_PIN) as made:
        if os.environ.get(OWN_PROGRAM_ENV) == "1":
            made.maps = {spec.name: Map.create(spec, max_entries=flow_sets) for spec in abi.GROUP_MAPS}
            made.maps["ctl"].put(0, ctl)
            made.prog_fd = loader.load_own(made.maps, migrate)
            made.done()
            return
        with shared_program.shared_lock(layout.bpffs), shared_program.SharedProgram.opened(
                layout.bpffs, loader.shared_digest(shared_program.NAMES, migrate), migrate) as shared:
            slot, made.maps = shared.take(flow_sets)
            made.maps["members"] = Map.create(abi.MAP_SPECS["members"])
            ctl.flags |= abi.RP_CTL_SHARED
            ctl.slot = slot
            made.maps["ctl"].put(0, ctl)
            made.prog_fd = loader.load({**made.maps, **shared.handoff_maps()}, migrate)
            shared.claim(slot, bpfsys.prog_info(made.prog_fd).id)
            try:
                made.done()
            except BaseException:
                shared.release(slot, bpfsys.prog_info(made.prog_fd).id)
                raise


def remove(layout: Layout, name: str) -> None:
    """Unpin group `name` and free its slot of the shared program (the
    caller holds the namespace's lock)."""
    path = layout.group_dir(name)
    prog = shared_program.program_of(path)
    # ctl alone (a damaged or foreign folder is still removed: no slot then).
    ctl = read_ctl(layout, name)
    shared = ctl is not None and ctl.abi_version == abi.RP_ABI_VERSION and ctl.flags & abi.RP_CTL_SHARED
    slot = ctl.slot if shared else None
    layout.remove_group_dir(name)
    if slot is not None and prog is not None:
        shared_program.release(layout.bpffs, slot, prog)
    elif prog is not None:
        # Unreadable state (another version's): whatever slot its program held is freed, so that
        # its sockets leave that slot's socket array; a shared program of another build is left be.
        with contextlib.suppress(RpctlError, OSError):
            shared_program.sweep(layout.bpffs)


@contextlib.contextmanager
def opened_or_created(
    layout: Layout,
    name: str,
    info: Optional[sockets.SocketInfo],
    options: Optional[GroupOptions] = None,
    locked: bool = False,
) -> Iterator[tuple[Group, bool]]:
    """Group `name` open under its lock for a membership write, and whether
    it was created here: when it does not exist and `info` (a socket of its
    endpoint) is given, it is created first with `options` (the caller holds
    the namespace's lock); when it exists, options given must be its own
    (StateError).  `locked`: the caller holds the group's lock already.  A
    group created here is removed again when the write fails: first members
    that cannot join leave no group behind."""
    created = info is not None and not os.path.isdir(layout.group_dir(name))
    if created:
        create(layout, name, info, options)
    try:
        lock = contextlib.nullcontext() if locked else layout.group_lock(name)
        with lock, Group.open(name, layout) as g:
            if not created and options is not None:
                options.check_against(name, g.options())
            yield g, created
    except BaseException:
        if created:
            remove(layout, name)
        raise


def group_sockets(g: Group) -> Iterable[socket.socket]:
    """Sockets of the group we can take: from the members' recorded (pid, fd)
    first, then, only if none of those is the member's any more, from any
    process sock_diag shows holding a member's socket (a walk of /proc)."""
    members = [m for m in g.members() if m.flags & abi.RP_MEMBER_USED]
    cookies = {m.cookie for m in members}
    tried: set[tuple[int, int]] = set()
    for pid, fd in _candidates(g, members, cookies):
        if (pid, fd) in tried:
            continue
        tried.add((pid, fd))
        try:
            sock = sockets.take_socket(pid, fd)
        except (RpctlError, OSError):
            continue
        try:
            if sockets.cookie_of(sock) in cookies:
                yield sock
        finally:
            sock.close()


def _candidates(g: Group, members: list, cookies: set[int]) -> Iterator[tuple[int, int]]:
    """(pid, fd) pairs that may hold a member's socket: the recorded ones, then the holders sock_diag finds."""
    yield from ((m.pid, m.fd) for m in members)
    try:
        from ..kernel import diag

        ctl = g.ctl()
        found = diag.listeners(ctl.proto, ctl.port)
        inodes = [d.inode for c, d in found.items() if c in cookies]
        holders = diag.holders(inodes)
    except OSError:
        return
    for pairs in holders.values():
        yield from pairs


def unload(group: Optional[str] = None, force: bool = False, layout: Optional[Layout] = None) -> tuple[str, bool]:
    """Detach the program and remove the pinned state; the workers' sockets
    stay as they are and go back to the kernel's own selection."""
    probe.require_bpf_privileges("unload")
    layout = layout or Layout()
    group = resolve_group(group, layout)
    with layout.ns_lock(), layout.group_lock(group):
        detached = False
        alive = False
        try:
            with Group.open(group, layout) as g:
                alive = any(
                    g.socket_cookie(i) is not None for i in range(abi.RP_MAX_MEMBERS)
                )
                with contextlib.closing(group_sockets(g)) as socks:
                    for sock in socks:
                        detached = sockets.detach_program(sock)
                        break
        except StateError:
            if not force:
                raise
            detached = foreign_state.detach(layout.group_dir(group))  # state of another version
        if alive and not detached and not force:
            raise RpctlError(
                f"unload {group}: no member socket could be reached to detach the program "
                "(members' processes gone?); use ", Param("force", flag=True), " to remove the state anyway",
            )
        remove(layout, group)
        audit.unloaded(group, detached, layout.netns)
        return group, detached
