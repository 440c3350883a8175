"""Registering: processes' sockets made members of their endpoint's group, and members removed.

register() makes one socket a member (`rpctl register`, join(), the
launcher, restarts); register_all() makes several at once (adopt: every
listener of a server in one publish, all or nothing); unregister() removes
one.  The group is the one named, else the one steering the sockets'
endpoint, else a new one named after it, which the first members create.
Each writes through membership.update_members, the one write path of
membership.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from ..contract import abi
from ..kernel import probe
from ..tables import quic
from ..tables.naming import check_member_name
from .lifecycle import opened_or_created
from .lookup import default_group_name, find_group_for, writing
from .membership import NewMember, taken, update_members
from .options import GroupOptions
from .policy import DEFAULT_WEIGHT, check_weight
from .state import Layout, check_group_name


@dataclass
class Registration:
    group: str
    member: str
    index: int
    created: bool
    replaced: bool
    migration: bool = True
    proto: str = "tcp"
    quic_server_id: Optional[str] = None  # hex, in a QUIC group


def register(
    name: str,
    pid: int,
    fd: int,
    group: Optional[str] = None,
    weight: int = DEFAULT_WEIGHT,
    replace: bool = False,
    layout: Optional[Layout] = None,
    attach: bool = True,
    options: Optional[GroupOptions] = None,
    quic_server_id: Optional[str] = None,
) -> Registration:
    """Make fd `fd` of process `pid` a member named `name`.

    The first member of a port creates the group: maps, program, pins, and
    the program attached to the reuseport group, with `options` (defaults
    for those not given); options given for an existing group must be its
    own.  attach=False leaves the attaching to a later call (the launcher
    attaches once every child is registered).  replace=True gives an
    existing member of that name this socket, keeping its index, policy and
    counters.  In a QUIC group every member has a server id: quic_server_id
    (hex), else the member's own on a replace, else the lowest free one.
    """
    options = (options or GroupOptions()).check()
    what = f"register {name}"
    check_member_name(name)
    check_weight(name, weight)
    new = NewMember(name, pid, fd, weight, replace=replace, quic_server_id=quic_server_id, what=what)
    return register_all([new], group, layout, attach, options, what)[0]


def register_all(
    news: Sequence[NewMember],
    group: Optional[str] = None,
    layout: Optional[Layout] = None,
    attach: bool = True,
    options: Optional[GroupOptions] = None,
    what: str = "register",
) -> list[Registration]:
    """Make the sockets of `news` (one endpoint) members of one group in ONE
    publish, all or nothing: every socket is taken before anything changes,
    and one refused leaves the group as it was (and no group, when these
    were to create it).  `what`: what errors of the whole start with.
    Returns each one's Registration, in the order of `news`."""
    options = (options or GroupOptions()).check()
    probe.require_kernel()
    probe.require_bpf_privileges(what)
    if group is not None:
        check_group_name(group)
    if not news:
        return []
    layout = layout or Layout()
    with taken(news) as joining:
        first = joining[0].info
        with layout.ns_lock():
            layout.sweep_temp_dirs()
            if group is None:
                group = find_group_for(first.key, layout) or default_group_name(first.key)
            with opened_or_created(layout, group, first, options) as (g, created):
                members = g.members()
                present = g.member_index(members)
                names = update_members(g, members, joining, attach=attach, what=what)
                migration = bool(g.ctl().flags & abi.RP_CTL_MIGRATE)
                length = g.options().quic_server_id_length
    out = []
    for j in joining:
        index = names[j.member.name]
        m = members[index]
        sid = quic.format_server_id(m.quic_server_id, length) if m.flags & abi.RP_MEMBER_QUIC else None
        out.append(Registration(group, j.member.name, index, created, j.member.name in present, migration,
                                j.info.proto_name, sid))
    return out


def unregister(name: str, group: Optional[str] = None, layout: Optional[Layout] = None) -> str:
    """Remove member `name`; returns the group's name."""
    with writing(group, layout) as g:
        members = g.members()
        update_members(g, members, policies={g.find(members, name): None})
        return g.name
