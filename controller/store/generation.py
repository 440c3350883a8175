"""A group's pinned state, opened and read, and the one way to change it: publish a generation.

Group opens the maps pinned in the group's bpffs folder (checked against
the ABI) and reads them back: ctl, the members, the socket array, the
counters, the tables of a generation.

Every write goes through Group.publish(): the slot table, live list and
member policies of the inactive generation are written first, then one
update of ctl.gen makes them live at once.  A writer killed before that
update leaves the live generation untouched; the program never sees half
a table.  The member map keeps each member's policy per generation, so a
reader always sees the weights and drain flags of the live table.
"""

from __future__ import annotations

import array
import ctypes
import logging
import os
import signal
import socket
import time
from typing import TYPE_CHECKING, Collection, Iterable, Mapping, Optional

from ..contract import abi
from ..contract.errors import NotFound, StateError
from ..contract.refs import Call
from ..kernel import bpfsys, sockets
from ..kernel.maps import Map
from ..tables import pin_table, quic, slot_table
from . import audit
from .policy import draining_flag, is_live
from .state import Layout

if TYPE_CHECKING:
    from .options import GroupOptions

PROG_PIN = "prog"

log = logging.getLogger("rpctl.group")


def failpoint(name: str) -> None:
    """Test hook: RPCTL_FAILPOINT=<name>:pause stops a writer at a named
    point so that a test can SIGKILL it there; <name>:exit dies there at once,
    as SIGKILL would kill it.  Either way it logs "failpoint NAME reached"
    (WARNING) first, which a test waits for on stderr."""
    spec = os.environ.get("RPCTL_FAILPOINT", "")
    point, _, action = spec.partition(":")
    if point != name:
        return
    log.warning("failpoint %s reached", name)
    if action == "exit":
        os.kill(os.getpid(), signal.SIGKILL)
    while True:
        time.sleep(3600)


def name_of(m: abi.RpMember) -> str:
    """A member entry's name."""
    return m.name.decode(errors="replace")


class Group:
    """The pinned state of one group, opened for reading or writing."""

    def __init__(self, layout: Layout, name: str, maps: dict[str, Map]):
        self.layout = layout
        self.name = name
        self.dir = layout.group_dir(name)
        self.maps = maps

    # Opening -----------------------------------------------------------

    @classmethod
    def open(cls, name: str, layout: Optional[Layout] = None) -> "Group":
        layout = layout or Layout()
        path = layout.group_dir(name)
        if not os.path.isdir(path):
            raise NotFound(f"no group {name!r} in this network namespace")
        maps: dict[str, Map] = {}
        try:
            for spec in abi.GROUP_MAPS:
                maps[spec.name] = Map.open_pinned(os.path.join(path, spec.name), spec)
        except FileNotFoundError:
            for m in maps.values():
                m.close()
            raise StateError(f"group {name!r}: pinned state in {path} is incomplete; run ", Call("unload", group=name))
        except BaseException:
            for m in maps.values():
                m.close()
            raise
        group = cls(layout, name, maps)
        ctl = group.ctl()
        if ctl.abi_version != abi.RP_ABI_VERSION:
            group.close()
            raise StateError(
                f"group {name!r} was made by an rpctl with state version {ctl.abi_version}, "
                f"this one speaks {abi.RP_ABI_VERSION}: it steers on as it was, and this rpctl can change "
                "none of it; ", Call("unload", group=name, force=True),
                " detaches its program and removes it, to be made anew",
            )
        sets = bpfsys.map_info(maps["flows"].fd).max_entries
        if ctl.flags & abi.RP_CTL_FLOWS and sets * abi.RP_FLOW_WAYS != ctl.flow_table_size:
            group.close()
            raise StateError(
                f"group {name!r}: its flow table holds {sets * abi.RP_FLOW_WAYS} flows, its ctl says "
                f"{ctl.flow_table_size}; run ", Call("unload", group=name),
            )
        return group

    def close(self) -> None:
        for m in self.maps.values():
            m.close()

    def __enter__(self) -> "Group":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # Reading -------------------------------------------------------------

    def ctl(self) -> abi.RpCtl:
        value = self.maps["ctl"].get(0, abi.RpCtl)
        if value is None:
            raise StateError(f"group {self.name!r}: ctl map has no element 0")
        return value

    def options(self) -> GroupOptions:
        """The creation options the group was made with."""
        from .options import GroupOptions  # here: a reader of the group does not need them

        return GroupOptions.of_ctl(self.ctl())

    def members(self) -> list[abi.RpMember]:
        return self.maps["members"].read_structs(abi.RpMember, abi.RP_MAX_MEMBERS)

    def socket_cookie(self, index: int) -> Optional[int]:
        """Cookie of the socket at `index` of the socket array; None when the
        kernel emptied the entry (the socket closed)."""
        value = self.maps["socks"].get(index, ctypes.c_uint64)
        return None if value is None else value.value

    def member_totals(self, indexes: Optional[Collection[int]] = None) -> list[dict[str, int]]:
        """Every member counter (rp_member_stats' fields) per index, summed over CPUs.
        Given `indexes`, only theirs are summed and the other rows are left empty: summing
        all RP_MAX_MEMBERS entries was most of the time of reading a group of few members."""
        rows = self.maps["member_stats"].read_percpu_all(abi.RpMemberStats, abi.RP_MAX_MEMBERS, indexes)
        names = [name for name, _ in abi.RpMemberStats._fields_]
        return [{name: sum(getattr(c, name) for c in cpus) for name in names}
                if indexes is None or i in indexes else {} for i, cpus in enumerate(rows)]

    def group_totals(self) -> dict[str, int]:
        """Every group counter (rp_group_stats' fields), summed over CPUs."""
        cpus = self.maps["group_stats"].read_percpu(0, abi.RpGroupStats)
        return {name: sum(getattr(c, name) for c in cpus) for name, _ in abi.RpGroupStats._fields_}

    def slot_table(self, gen: int) -> array.array:
        """The weighted table of generation `gen` (0 or 1): member index per
        slot, slot_table.NO_MEMBER throughout while it has no live member."""
        element = self.maps["gens"].get(gen, abi.RpGen)
        return slots_of(element) if element is not None else slot_table.empty_table(abi.RP_SLOTS)

    def prog_id(self) -> int:
        try:
            fd = bpfsys.obj_get(os.path.join(self.dir, PROG_PIN))
        except OSError:
            return 0
        try:
            return bpfsys.prog_info(fd).id
        finally:
            os.close(fd)

    # Writing (callers hold the group lock) --------------------------------

    def publish(
        self,
        policies: Mapping[int, Optional[abi.RpPolicy]],
        members: list[abi.RpMember],
        pin: Optional[pin_table.PinPlan] = None,
    ) -> None:
        """Make `policies` (index -> policy, None = not a member) the live generation.

        Indexes of used members missing from `policies` keep their live policy.
        `pin` sets the selection mode and its pin tables; None keeps the live ones.
        """
        ctl = self.ctl()
        active = ctl.gen & 1
        nxt = active ^ 1
        totals = self.member_totals()
        final: dict[int, Optional[abi.RpPolicy]] = {}
        for idx, m in enumerate(members):
            if not m.flags & abi.RP_MEMBER_USED:
                continue
            if idx in policies:
                final[idx] = policies[idx]
            else:
                live = m.policy[active]
                # A used entry absent from the live generation is what a
                # writer killed mid-register or mid-unregister leaves.
                final[idx] = abi.RpPolicy(live.weight, live.flags) if live.flags & abi.RP_POLICY_PRESENT else None

        weights = self.live_weights(members, final)

        live_gen = self.maps["gens"].get(active, abi.RpGen)
        previous = slots_of(live_gen) if live_gen is not None else None
        table = slot_table.build_table(weights, previous, abi.RP_SLOTS)

        gen = pin_table.next_gen(live_gen, pin)
        gen.n_live, gen.published_ns = len(weights), time.time_ns()
        # No live member: the table names nobody, and the program skips it.
        gen.slots[:] = table if weights else bytes(abi.RP_SLOTS)
        for i, idx in enumerate(sorted(weights)):
            gen.live[i] = idx
        # Flows remember the incarnation of their member's socket: an index
        # that is no member, or holds another socket now, loses its flows.
        for idx in range(abi.RP_MAX_MEMBERS):
            present = final.get(idx) is not None
            gen.incarnation[idx] = members[idx].incarnation if present else abi.RP_NO_INCARNATION
        # A pinned member takes connections exactly when the table would give it some.
        pin_table.refresh(gen, present=[i for i, pol in final.items() if pol is not None], available=weights)
        # Every present member keeps its QUIC packets, draining or not.
        gen.quic_ids[:] = quic.lookup_table(
            {i: members[i].quic_server_id for i, pol in final.items()
             if pol is not None and members[i].flags & abi.RP_MEMBER_QUIC}
        )
        self.maps["gens"].put(nxt, gen)

        for idx, pol in final.items():
            m = members[idx]
            m.policy[nxt] = pol if pol is not None else abi.RpPolicy(0, 0)
            m.base_selections[nxt] = abi.selections(totals[idx])
            self.maps["members"].put(idx, m)

        failpoint("before-flip")
        ctl.gen = nxt
        self.maps["ctl"].put(0, ctl)

        # Entries that left with this generation are cleared only now.
        for idx, pol in final.items():
            if pol is None:
                self.maps["socks"].delete(idx)
                self.maps["members"].put(idx, freed(members[idx]))
        audit.published(self.name, self.layout.netns, members, active, final, live_gen, gen, self.endpoint_key)

    def socket_open(self, index: int, m: abi.RpMember) -> bool:
        """Whether member entry `m` still has its socket at `index` of the
        socket array (the kernel empties the entry when the socket closes)."""
        return self.socket_cookie(index) == m.cookie

    def live_weights(
        self, members: list[abi.RpMember], policies: Optional[Mapping[int, Optional[abi.RpPolicy]]] = None
    ) -> dict[int, int]:
        """Index -> weight of the live members (policy.is_live) under
        `policies` (index -> policy, None = not a member; default: the live
        generation's): the members that take new connections."""
        if policies is None:
            policies = self.live_policies(members)
        return {idx: pol.weight for idx, pol in policies.items()
                if pol is not None and is_live(pol.weight, draining_flag(pol), self.socket_open(idx, members[idx]))}

    def live_policies(self, members: list[abi.RpMember], gen: Optional[int] = None) -> dict[int, abi.RpPolicy]:
        """Index -> policy (a copy) of the members present in the live
        generation (or in generation `gen`, 0 or 1, read from ctl before)."""
        if gen is None:
            gen = self.ctl().gen & 1
        out = {}
        for idx, m in enumerate(members):
            pol = m.policy[gen]
            if m.flags & abi.RP_MEMBER_USED and pol.flags & abi.RP_POLICY_PRESENT:
                out[idx] = abi.RpPolicy(pol.weight, pol.flags)
        return out

    def member_index(self, members: list[abi.RpMember]) -> dict[str, int]:
        """Name -> index of the members present in the live generation."""
        return {name_of(members[idx]): idx for idx in self.live_policies(members)}

    def find(self, members: list[abi.RpMember], name: str) -> int:
        index = self.member_index(members).get(name)
        if index is None:
            raise NotFound(f"no member {name!r} in group {self.name!r}")
        return index

    def endpoint_key(self) -> sockets.EndpointKey:
        """The endpoint this group steers."""
        return ctl_endpoint(self.ctl())

    def attach(self, sock: socket.socket) -> None:
        """Attach the group's program to the reuseport group of `sock`
        (replacing whatever program it had)."""
        prog_fd = bpfsys.obj_get(os.path.join(self.dir, PROG_PIN))
        try:
            sockets.attach_program(sock, prog_fd)
        finally:
            os.close(prog_fd)

    def attach_any(self, socks: Iterable[socket.socket]) -> bool:
        """Attach the program through the first of `socks` the kernel takes it
        from (one socket attaches it for the whole reuseport group); False when
        none does."""
        for sock in socks:
            try:
                self.attach(sock)
                return True
            except OSError:
                continue
        return False

    def reset_stats(self, index: int) -> None:
        ncpus = bpfsys.possible_cpus()
        stride = (ctypes.sizeof(abi.RpMemberStats) + 7) & ~7
        zeros = ctypes.create_string_buffer(stride * ncpus)
        self.maps["member_stats"].put(index, zeros)


def slots_of(gen: abi.RpGen) -> array.array:
    """The weighted table of a generation element, as slot_table.build_table makes it."""
    if not gen.n_live:
        return slot_table.empty_table(abi.RP_SLOTS)
    return array.array("I", gen.slots)


def read_ctl(layout: Layout, name: str) -> Optional[abi.RpCtl]:
    """Group `name`'s ctl element alone (one map opened, not every map as
    Group.open does); None when it cannot be read."""
    try:
        m = Map.open_pinned(os.path.join(layout.group_dir(name), "ctl"), abi.MAP_SPECS["ctl"])
    except (OSError, StateError):
        return None
    try:
        return m.get(0, abi.RpCtl)
    finally:
        m.close()


def ctl_endpoint(ctl: abi.RpCtl) -> sockets.EndpointKey:
    """The endpoint a group steers, from its ctl element."""
    return sockets.EndpointKey(
        sockets.proto_name(ctl.proto), ctl.family, sockets.addr_from_bytes(ctl.family, bytes(ctl.addr)), ctl.port
    )


def freed(m: abi.RpMember) -> abi.RpMember:
    """The entry of an index whose member left: empty, but for its
    incarnation, so that the next socket there gets a new one and the old
    member's flows do not follow it."""
    return abi.RpMember(incarnation=m.incarnation)

