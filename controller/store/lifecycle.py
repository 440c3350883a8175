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
import shutil
import socket
import time
from typing import Iterable, Iterator, Optional

from ..contract import abi
from ..contract.errors import RpctlError, StateError
from ..contract.refs import Param
from ..kernel import bpfsys, jiffies, probe, sockets
from ..kernel.maps import Map
from . import audit, foreign_state
from .generation import PROG_PIN, Group
from .lookup import resolve_group
from .options import GroupOptions
from .state import Layout


def create(layout: Layout, name: str, info: sockets.SocketInfo, options: Optional[GroupOptions] = None) -> None:
    """Create and pin a group's maps and program under a temporary name,
    then rename the folder into place: all or nothing.  `info`: a socket of
    the endpoint it steers; `options`: those given (None: the defaults for
    the socket's protocol).  The caller holds the namespace's lock."""
    from ..kernel import loader

    options = (options or GroupOptions()).resolved(info.proto)

    tmp = layout.temp_dir(name)
    os.mkdir(tmp, 0o700)
    maps: dict[str, Map] = {}
    prog_fd = -1
    try:
        for spec in abi.GROUP_MAPS:
            # A group without flow affinity keeps a one-set table: the
            # program is the same for every group and names the map.
            maps[spec.name] = Map.create(spec, max_entries=max(1, options.flow_table_size // abi.RP_FLOW_WAYS))
        ctl = abi.RpCtl(
            abi_version=abi.RP_ABI_VERSION,
            gen=0,
            proto=info.proto,
            family=info.family,
            port=info.port,
            created_ns=time.time_ns(),
        )
        ctypes.memmove(ctl.addr, sockets.addr_bytes(info), 16)
        migrate = loader.migration_wanted()
        ctl.flags = abi.RP_CTL_MIGRATE if migrate else 0
        options.write_ctl(ctl, jiffies.hz() if options.flow_affinity else 0)
        maps["ctl"].put(0, ctl)
        prog_fd = loader.load(maps, migrate)
        for spec_name, m in maps.items():
            m.pin(os.path.join(tmp, spec_name))
        bpfsys.obj_pin(prog_fd, os.path.join(tmp, PROG_PIN))
        os.rename(tmp, layout.group_dir(name))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        for m in maps.values():
            m.close()
        if prog_fd >= 0:
            os.close(prog_fd)


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
            layout.remove_group_dir(name)
        raise


def group_sockets(g: Group) -> Iterable[socket.socket]:
    """Sockets of the group we can take: from the members' recorded (pid, fd),
    then from any process sock_diag shows holding a member's socket."""
    members = [m for m in g.members() if m.flags & abi.RP_MEMBER_USED]
    cookies = {m.cookie for m in members}
    tried = set()
    candidates = [(m.pid, m.fd) for m in members]
    try:
        from ..kernel import diag

        ctl = g.ctl()
        found = diag.listeners(ctl.proto, ctl.port)
        inodes = [d.inode for c, d in found.items() if c in cookies]
        for pairs in diag.holders(inodes).values():
            candidates.extend(pairs)
    except (OSError, RuntimeError):
        pass
    for pid, fd in candidates:
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
        layout.remove_group_dir(group)
        audit.unloaded(group, detached, layout.netns)
        return group, detached
