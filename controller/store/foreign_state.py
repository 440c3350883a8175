"""A group's folder whose pinned state this rpctl cannot read (made by an rpctl of another
state version, or damaged): the program in it detached, so that its sockets are free again.

Such a group goes on steering with the program and tables it had: the program stays
attached to the reuseport group, and its socket array keeps the sockets, which the kernel
lets be in one socket array only.  Removing the folder's pins alone would leave both
alive (the attached program holds its maps), and no group of this rpctl could take the
sockets.  What every state version has kept is the head of struct rp_ctl (abi_version,
gen, proto, family, addr, port: bpf/rpctl.h); read from it, the group's endpoint leads to
its listeners (sock_diag), and through any of them the program is detached.  With the
pins removed as well, the old program and its maps go, and the sockets can join a group
of this rpctl (apply, adopt, register).
"""

from __future__ import annotations

import ctypes
import os
import socket
from typing import Optional

from ..contract import abi
from ..contract.errors import RpctlError
from ..kernel import bpfsys, diag, sockets
from .generation import ctl_endpoint

__all__ = ["HEAD_SIZE", "endpoint", "endpoint_of_ctl", "detach"]

# The bytes of rp_ctl every state version has laid out alike: up to and with `port`.
HEAD_SIZE = abi.RpCtl.port.offset + abi.RpCtl.port.size


def endpoint(group_dir: str) -> Optional[sockets.EndpointKey]:
    """The endpoint a group's folder steers, from the head of its ctl map; None when unreadable."""
    try:
        fd = bpfsys.obj_get(os.path.join(group_dir, "ctl"))
    except OSError:
        return None
    try:
        info = bpfsys.map_info(fd)
        if info.key_size != ctypes.sizeof(ctypes.c_uint32) or info.value_size < HEAD_SIZE:
            return None
        raw = (ctypes.c_uint8 * info.value_size)()
        if not bpfsys.map_lookup(fd, ctypes.c_uint32(0), raw, "read ctl[0]"):
            return None
        return endpoint_of_ctl(bytes(raw))
    except OSError:
        return None
    finally:
        os.close(fd)


def endpoint_of_ctl(value: bytes) -> Optional[sockets.EndpointKey]:
    """The endpoint in the head of a ctl element of any state version; None when it names none."""
    if len(value) < HEAD_SIZE:
        return None
    ctl = abi.RpCtl.from_buffer_copy(value[:HEAD_SIZE].ljust(ctypes.sizeof(abi.RpCtl), b"\0"))
    if ctl.family not in (socket.AF_INET, socket.AF_INET6):
        return None  # addresses of other families would read as IPv6 ones
    try:
        return ctl_endpoint(ctl)
    except (ValueError, KeyError):
        return None


def detach(group_dir: str) -> bool:
    """Detach the program that steers the endpoint of `group_dir`'s state, through any listener of
    that endpoint this process can take; False when none was reached (or none had a program)."""
    ep = endpoint(group_dir)
    if ep is None:
        return False
    try:
        found = diag.listeners(sockets.proto_number(ep.proto), ep.port, ep.family)
    except (OSError, ValueError):
        return False
    inodes = [d.inode for d in found.values() if d.address == ep.addr]
    for pairs in diag.holders(inodes).values():
        for pid, fd in pairs:
            try:
                sock = sockets.take_socket(pid, fd)
            except (RpctlError, OSError):
                continue
            try:
                return sockets.detach_program(sock)
            except OSError:
                continue
            finally:
                sock.close()
    return False
