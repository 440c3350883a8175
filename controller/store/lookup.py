"""Which group: the one a command means, the one steering an endpoint, a new one's name.

A command that names no group means the only one of the namespace; an
endpoint belongs to the group whose ctl element names it; a group made for
an endpoint without a name is named after it (tcp-8080).  writing() is the
group a write means, held: privileges checked, its lock taken, its maps
opened.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from typing import Iterator, Optional

from ..contract import abi
from ..contract.errors import NotFound, UsageError
from ..contract.refs import Param
from ..kernel import sockets
from .generation import Group, ctl_endpoint, read_ctl
from .state import Layout, check_group_name


def resolve_group(name: Optional[str], layout: Optional[Layout] = None) -> str:
    """The group a command means: the one named, or the only one there is."""
    layout = layout or Layout()
    if name is not None:
        check_group_name(name)
        try:
            found = stat.S_ISDIR(os.stat(layout.group_dir(name)).st_mode)
        except (FileNotFoundError, NotADirectoryError):
            found = False
        # A PermissionError goes out as it is: a user who may not look is told so, not "no group".
        if not found:
            raise NotFound(f"no group {name!r} in this network namespace")
        return name
    groups = layout.groups()
    if not groups:
        raise NotFound("no group in this network namespace: register a member first")
    if len(groups) > 1:
        raise UsageError(f"several groups here ({', '.join(groups)}): say which with ", Param("group"))
    return groups[0]


def default_group_name(key: sockets.EndpointKey) -> str:
    """tcp-8080, udp6-53: the name of a group made for an endpoint when none is given."""
    return f"{key.proto}{'6' if key.family == socket.AF_INET6 else ''}-{key.port}"


def find_group_for(key: sockets.EndpointKey, layout: Optional[Layout] = None) -> Optional[str]:
    """The group of this namespace that steers endpoint `key`, if any: the one
    place that answers it for register, adopt, reconcile and the launcher."""
    layout = layout or Layout()
    usual = default_group_name(key)
    # By ctl alone, the endpoint's default name first: a host of hundreds
    # of groups reads one small map per group at most, not every map.
    for name in sorted(layout.groups(), key=lambda n: n != usual):
        ctl = read_ctl(layout, name)
        if ctl is not None and ctl.abi_version == abi.RP_ABI_VERSION and ctl_endpoint(ctl) == key:
            return name
    return None


@contextlib.contextmanager
def writing(group: Optional[str], layout: Optional[Layout] = None) -> Iterator[Group]:
    """The group a write means (resolve_group), open and locked for the write."""
    from ..kernel import probe  # here: resolving a group for a read needs no privilege check

    probe.require_bpf_privileges("change a group")
    layout = layout or Layout()
    group = resolve_group(group, layout)
    with layout.group_lock(group), Group.open(group, layout) as g:
        yield g
