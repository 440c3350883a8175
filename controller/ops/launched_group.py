"""The group of a launcher's members: found or made, and each change the launcher makes to it.

The launcher (controller/ops/launcher.py) decides when a member is
registered, drained, undrained or let go; LaunchedGroup makes each of these
in the group store, and says what happens when the store refuses: a
registration refused stops a start, a drain, an undrain or an
unregistration refused is logged and the launcher carries on.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass
from typing import Callable, Collection, Iterable, Optional, Sequence

from ..contract.errors import InvalidInput, NotFound, RpctlError
from ..contract.refs import Param
from ..kernel import sockets as socks
from ..read import views
from ..store.generation import Group
from ..store.lifecycle import unload
from ..store.lookup import default_group_name, find_group_for, resolve_group
from ..store.membership import quic_server_id
from ..store.registration import register, unregister
from ..store.steering import is_draining, set_draining
from ..store.options import GroupOptions
from ..tables import quic
from . import orphans
from .supervisor import LISTEN_FD, Child

# What the launcher's group becomes: INFO; what could not be done to it: WARNING.
log = logging.getLogger("rpctl.launched_group")


@dataclass
class Member(Child):
    """A child that is a member of the group: its socket, registered under its name."""

    cookie: int = 0                # of the socket: tells our socket in the array from others
    registered: bool = False       # the group knows this name
    operator_drained: bool = False  # drained by someone else before its child died: stays drained
    quic_server_id: Optional[str] = None  # hex, in a QUIC group: the same for every child of the member
    retire_by: Optional[float] = None  # resize() removed it: drained, stopped by then at the latest

    @property
    def retiring(self) -> bool:
        return self.retire_by is not None


class LaunchedGroup:
    """A launcher's group: its name (the group of the address when none is
    given), the options it is made with, the weight of its members, and
    whether this launcher created it."""

    def __init__(self, name: Optional[str], weight: int, options: GroupOptions):
        self.name = name
        self.weight = weight
        self.options = options
        # This launcher created the group, or took it over (every member of it was gone):
        # it unloads the group when no live member is left in it.
        self.created = False
        self.attached = False          # set once running: a group missing after that was unloaded

    # Before the first child --------------------------------------------------------------

    def orphans(self, key: socks.EndpointKey, names: Collection[str],
                argv_of: Callable[[str], Sequence[str]]) -> dict[str, orphans.Orphan]:
        """The live children that a launcher of this group left when it died
        (controller/ops/orphans.py), under our `names`: ours to take back."""
        name = self.name or find_group_for(key)
        if name is None:
            return {}
        try:
            view = views.read_view(name, with_queues=False)
        except NotFound:
            return {}
        return orphans.find(view.members, names, argv_of)

    def resolve(self, info: socks.SocketInfo, members: Sequence[Member], taken: Collection[str] = ()) -> None:
        """Find the group of this address (or the one named), check our
        options against its own, give the members their QUIC ids, and refuse
        names a live member already has, but for those `taken` back (orphans)."""
        if self.name is None:
            self.name = find_group_for(info.key) or default_group_name(info.key)
        try:
            view = views.read_view(self.name, with_queues=False)
        except NotFound:
            self.assign_quic_ids(members, self.options.resolved(info.proto), [])
            return  # a new group
        with Group.open(self.name) as g:
            own = g.options()
        self.options.check_against(self.name, own)
        self.assign_quic_ids(members, own, view.members)
        self.check_free([m.name for m in members if m.name not in taken], view.members)
        if all(m.gone or m.name in taken for m in view.members):
            # Left by a launcher that could not clean up (SIGKILLed, or its machine's power
            # cut): no one else is steered by it, so this launcher removes it when it is done.
            self.created = True
            what = "every member of it was gone" if not taken else "its launcher had died"
            log.info("took over group %s: %s", self.name, what)

    def check_free(self, names: Sequence[str], present: Optional[Sequence[views.MemberView]] = None) -> None:
        """Refuse names a live member of the group (`present`, read now when
        None) has: two launchers must not steal each other's members.  A
        member whose socket is gone is taken over."""
        if present is None:
            present = views.read_view(self.name, with_queues=False).members
        for m in present:
            if m.name in names and not m.gone:
                raise InvalidInput(
                    f"run: group {self.name!r} already has a live member {m.name!r} (pid {m.pid}); "
                    "choose other names with ", Param("name_format", "Launcher"),
                )

    def assign_quic_ids(self, members: Sequence[Member], options: GroupOptions,
                        present: Sequence[views.MemberView]) -> None:
        """In a QUIC group, each member's server id before its first child
        starts (the child reads it from RPCTL_QUIC_SERVER_ID), as the group
        gives it (quic_server_id): the one a member of that name has,
        else the lowest one free.  Registering the child then asks for it."""
        if not options.quic:
            return
        length = options.quic_server_id_length
        held = {m.name: quic.parse_server_id(m.quic_server_id, length) for m in [*present, *members]
                if m.quic_server_id is not None}
        for m in members:
            if m.quic_server_id is None:
                held[m.name] = quic_server_id(held, m.name, None, length)
                m.quic_server_id = quic.format_server_id(held[m.name], length)

    def assign_new_quic_ids(self, members: Sequence[Member]) -> None:
        """QUIC ids for members added while running, beside the group's members of now."""
        if not self.options.quic:
            return
        with Group.open(self.name) as g:
            own = g.options()
        self.assign_quic_ids(members, own, views.read_view(self.name, with_queues=False).members)

    def attach(self, sockets: Iterable[socket.socket]) -> None:
        """Attach the group's program to the members' sockets (once: they share the port)."""
        with Group.open(self.name) as g:
            attached = g.attach_any(sockets)
        if not attached:
            raise RpctlError(f"run: could not attach the program of group {self.name!r}")
        self.attached = True

    # A member ------------------------------------------------------------------------------

    def register(self, m: Member) -> None:
        """Make the child's fd 3 the member's socket (it is the launcher's
        socket, so replacing keeps the member's index, weight and counters)."""
        if self.attached:
            # Once running, a missing group means someone unloaded it: back to
            # the kernel's own selection, as they asked.  register() would make
            # a new group of this one member, which would then get everything.
            resolve_group(self.name)
        r = register(m.name, m.pid, LISTEN_FD, group=self.name, weight=self.weight,
                     replace=True, attach=False, options=self.options,
                     quic_server_id=m.quic_server_id)
        m.registered = True
        self.created = self.created or r.created

    def drain_dead(self, m: Member) -> None:
        """Drain the member of a child that died, unless someone else drained
        it before (m.operator_drained then says so)."""
        try:
            m.operator_drained = is_draining(m.name, group=self.name)
            if not m.operator_drained:
                set_draining(m.name, True, force=True, group=self.name)
        except RpctlError as e:
            log.warning("%s: could not drain it: %s", m.name, e)

    def undrain(self, m: Member) -> bool:
        """Undrain the member of a replacement child; False (logged) when refused."""
        try:
            set_draining(m.name, False, group=self.name)
        except RpctlError as e:
            log.warning("%s: could not undrain it: %s", m.name, e)
            return False
        return True

    def set_draining(self, name: str, draining: bool) -> None:
        """Drain a member resize() removes (even its group's last live one), or undrain one it keeps."""
        set_draining(name, draining, force=draining, group=self.name)

    def states(self) -> dict[str, str]:
        """Each member's state (views.DRAINED, ...) by name; none (logged) when the group cannot be read."""
        try:
            return {v.name: v.state for v in views.read_view(self.name, with_queues=True).members}
        except RpctlError as e:
            log.warning("could not read group %s: %s", self.name, e)
            return {}

    def unregister(self, name: str) -> bool:
        """Remove the member; True when it is gone (it may have been already),
        False (logged) when the group refused."""
        try:
            unregister(name, group=self.name)
        except NotFound:
            pass
        except RpctlError as e:
            log.warning("%s: could not unregister it: %s", name, e)
            return False
        return True

    # The end -------------------------------------------------------------------------------

    def unload_if_created_and_empty(self) -> None:
        """Unload the group when this launcher created it (or took it over) and no live
        member is left in it: a member whose socket is gone steers nothing."""
        if not self.created or self.name is None:
            return
        try:
            view = views.read_view(self.name, with_queues=False)
            live = [m for m in view.members if not m.gone]
            if live:
                log.info("left group %s in place: %d other members are in it", self.name, len(live))
                return
            unload(group=self.name)
            log.info("unloaded group %s", self.name)
        except NotFound:
            pass
        except RpctlError as e:
            log.warning("could not unload group %s: %s", self.name, e)
