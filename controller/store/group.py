"""A group and its members: create, register, weigh, drain, read, unload.

Every write goes through Group.publish(): the slot table, live list and
member policies of the inactive generation are written first, then one
update of ctl.gen makes them live at once.  A writer killed before that
update leaves the live generation untouched; the program never sees half
a table.  The member map keeps each member's policy per generation, so a
reader always sees the weights and drain flags of the live table.
"""

from __future__ import annotations

import array
import contextlib
import ctypes
import logging
import os
import signal
import socket
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Optional

from ..contract import abi
from ..contract.errors import InvalidInput, NotFound, RpctlError, StateError, UsageError
from ..contract.refs import Call, Param
from ..kernel import bpfsys, jiffies, probe, sockets
from ..kernel.maps import Map
from ..tables import pin_table, quic, slot_table
from ..tables.adaptive import Reason
from ..tables.naming import check_member_name
from .options import GroupOptions
from .state import Layout, check_group_name

MAX_WEIGHT = 10000
DEFAULT_WEIGHT = 1

PROG_PIN = "prog"

log = logging.getLogger("rpctl.group")


def _now_ns() -> int:
    return time.time_ns()


def _failpoint(name: str) -> None:
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


def _name_of(m: abi.RpMember) -> str:
    return m.name.decode(errors="replace")


def check_weight(name: str, weight: object) -> int:
    if isinstance(weight, bool) or not isinstance(weight, int):
        raise InvalidInput(f"weight of {name}: {weight!r} is not a whole number")
    if not 0 <= weight <= MAX_WEIGHT:
        raise InvalidInput(f"weight of {name}: {weight} is out of range 0..{MAX_WEIGHT}")
    return weight


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
                f"this one speaks {abi.RP_ABI_VERSION}: unload it with that version"
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
        return GroupOptions.of_ctl(self.ctl())

    def members(self) -> list[abi.RpMember]:
        return self.maps["members"].read_structs(abi.RpMember, abi.RP_MAX_MEMBERS)

    def socket_cookie(self, index: int) -> Optional[int]:
        """Cookie of the socket at `index` of the socket array; None when the
        kernel emptied the entry (the socket closed)."""
        value = self.maps["socks"].get(index, ctypes.c_uint64)
        return None if value is None else value.value

    def member_totals(self) -> list[dict[str, int]]:
        """Every member counter (rp_member_stats' fields) per index, summed over CPUs."""
        rows = self.maps["member_stats"].read_percpu_all(abi.RpMemberStats, abi.RP_MAX_MEMBERS)
        return [{name: sum(getattr(c, name) for c in cpus) for name, _ in abi.RpMemberStats._fields_} for cpus in rows]

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
        gen.n_live, gen.published_ns = len(weights), _now_ns()
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

        _failpoint("before-flip")
        ctl.gen = nxt
        self.maps["ctl"].put(0, ctl)

        # Entries that left with this generation are cleared only now.
        for idx, pol in final.items():
            if pol is None:
                self.maps["socks"].delete(idx)
                self.maps["members"].put(idx, _freed(members[idx]))

    def live_weights(
        self, members: list[abi.RpMember], policies: Mapping[int, Optional[abi.RpPolicy]]
    ) -> dict[int, int]:
        """Index -> weight of the members that would take connections under
        `policies`: present, not draining, weight > 0, socket still open."""
        weights: dict[int, int] = {}
        for idx, pol in policies.items():
            if pol is None or pol.flags & abi.RP_POLICY_DRAINING or pol.weight == 0:
                continue
            if self.socket_cookie(idx) != members[idx].cookie:
                continue  # gone: the kernel dropped its socket from the array
            weights[idx] = pol.weight
        return weights

    def live_policies(self, members: list[abi.RpMember]) -> dict[int, abi.RpPolicy]:
        gen = self.ctl().gen & 1
        out = {}
        for idx, m in enumerate(members):
            pol = m.policy[gen]
            if m.flags & abi.RP_MEMBER_USED and pol.flags & abi.RP_POLICY_PRESENT:
                out[idx] = abi.RpPolicy(pol.weight, pol.flags)
        return out

    def find(self, members: list[abi.RpMember], name: str) -> int:
        for idx, pol in self.live_policies(members).items():
            if _name_of(members[idx]) == name:
                return idx
        raise NotFound(f"no member {name!r} in group {self.name!r}")

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


# Group-level operations ------------------------------------------------------


def resolve_group(name: Optional[str], layout: Optional[Layout] = None) -> str:
    """The group a command means: the one named, or the only one there is."""
    layout = layout or Layout()
    if name is not None:
        check_group_name(name)
        if not os.path.isdir(layout.group_dir(name)):
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


def ctl_endpoint(ctl: abi.RpCtl) -> sockets.EndpointKey:
    """The endpoint a group steers, from its ctl element."""
    return sockets.EndpointKey(
        sockets.proto_name(ctl.proto), ctl.family, sockets.addr_from_bytes(ctl.family, bytes(ctl.addr)), ctl.port
    )


def find_group_for(key: sockets.EndpointKey, layout: Optional[Layout] = None) -> Optional[str]:
    """The group of this namespace that steers endpoint `key`, if any: the one
    place that answers it for register, adopt and the launcher."""
    layout = layout or Layout()
    for name in layout.groups():
        try:
            with Group.open(name, layout) as g:
                if g.endpoint_key() == key:
                    return name
        except RpctlError:
            continue
    return None


def _create(layout: Layout, name: str, info: sockets.SocketInfo, options: Optional[GroupOptions] = None) -> None:
    """Create and pin a group's maps and program under a temporary name,
    then rename the folder into place: all or nothing.  `options`: those
    given (None: the defaults for the socket's protocol)."""
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
            created_ns=_now_ns(),
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
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        for m in maps.values():
            m.close()
        if prog_fd >= 0:
            os.close(prog_fd)


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
    own.  attach=False leaves the
    attaching to a later call (adopting several listeners registers them
    all first, so that none of them takes every connection meanwhile).
    In a QUIC group every member has a server id: quic_server_id (hex),
    else the member's own on a replace, else the lowest free one.
    """
    options = (options or GroupOptions()).check()
    what = f"register {name}"
    check_member_name(name)
    check_weight(name, weight)
    probe.require_kernel()
    probe.require_bpf_privileges(what)
    if group is not None:
        check_group_name(group)
    sock, info = sockets.take_member_socket(pid, fd, what)
    try:
        layout = layout or Layout()
        with layout.ns_lock():
            layout.sweep_temp_dirs()
            created = False
            if group is None:
                group = find_group_for(info.key, layout) or default_group_name(info.key)
            if not os.path.isdir(layout.group_dir(group)):
                _create(layout, group, info, options)
                created = True
            try:
                with layout.group_lock(group), Group.open(group, layout) as g:
                    own = g.options()
                    if not created:
                        options.check_against(group, own)
                    sid = None
                    if quic_server_id is not None:
                        if not own.quic:
                            raise InvalidInput(f"{what}: group {g.name!r} does not route QUIC by server id")
                        sid = quic.parse_server_id(quic_server_id, own.quic_server_id_length)
                    index, replaced = _register_locked(g, name, pid, fd, sock, info, weight, replace, what, attach,
                                                       own, sid)
                    migration = bool(g.ctl().flags & abi.RP_CTL_MIGRATE)
                    m = g.members()[index]
                    sid_text = (quic.format_server_id(m.quic_server_id, own.quic_server_id_length)
                                if m.flags & abi.RP_MEMBER_QUIC else None)
            except BaseException:
                if created:
                    layout.remove_group_dir(group)
                raise
        return Registration(group, name, index, created, replaced, migration, info.proto_name, sid_text)

    finally:
        # Holding a copy would keep the listener open after its worker
        # dies: connections would queue on it with no one to accept them.
        sock.close()


def _register_locked(
    g: Group,
    name: str,
    pid: int,
    fd: int,
    sock: socket.socket,
    info: sockets.SocketInfo,
    weight: int,
    replace: bool,
    what: str,
    attach: bool,
    options: GroupOptions,
    sid: Optional[int],
) -> tuple[int, bool]:
    ctl = g.ctl()
    _check_endpoint(g, ctl, info, what)
    members = g.members()
    live = g.live_policies(members)
    _clear_leftovers(g, members, live)
    existing = next((idx for idx in live if _name_of(members[idx]) == name), None)
    holder = _member_of_socket(g, members, live, info.cookie)
    if holder is not None and holder != existing:
        raise InvalidInput(f"{what}: this socket is already member {_name_of(members[holder])!r}")
    if existing is not None and not replace:
        raise InvalidInput(
            f"{what}: group {g.name!r} already has a member {name!r} (use ", Param("replace", flag=True),
            " to swap its socket)",
        )

    if options.quic:
        sid = _quic_server_id(g, members, live, existing, sid, options.quic_server_id_length, what)

    if existing is not None:
        index = existing
        pol = live[index]
    else:
        index = _free_indexes(g, members, 1, what)[0]
        pol = abi.RpPolicy(weight, abi.RP_POLICY_PRESENT)
        g.reset_stats(index)

    # The kernel refuses to add a socket that is in a socket array already
    # (EBUSY), even to its own slot: replacing a member's socket by the very
    # same one (`rpctl run` registering the socket a restarted child
    # inherited) only changes the pid and fd on record.
    new_socket = existing is None or g.socket_cookie(index) != info.cookie
    if new_socket:
        _put_socket(g, index, sock, what)

    m = members[index]
    incarnation = _next_incarnation(m) if new_socket else m.incarnation
    if existing is None:
        m = abi.RpMember()
        members[index] = m
    _record(m, name, info.cookie, pid, fd, sid)
    m.incarnation = incarnation
    g.maps["members"].put(index, m)
    g.publish({index: pol}, members)
    if attach:
        g.attach(sock)
    return index, existing is not None


def _quic_server_id(
    g: Group,
    members: list[abi.RpMember],
    live: Mapping[int, abi.RpPolicy],
    existing: Optional[int],
    sid: Optional[int],
    length: int,
    what: str,
) -> int:
    """The server id a member of a QUIC group gets: the one asked for (no
    other member may have it), else its own when its socket is replaced,
    else the lowest free one."""
    others = {idx: members[idx].quic_server_id for idx in live
              if idx != existing and members[idx].flags & abi.RP_MEMBER_QUIC}
    if sid is None:
        old = members[existing] if existing is not None else None
        if old is not None and old.flags & abi.RP_MEMBER_QUIC:
            return old.quic_server_id
        return quic.assign(others.values(), length)
    for idx, other in others.items():
        if other == sid:
            raise InvalidInput(
                f"{what}: QUIC server id {quic.format_server_id(sid, length)} is already the id of "
                f"member {_name_of(members[idx])!r} in group {g.name!r}"
            )
    return sid


def _clear_leftovers(g: Group, members: list[abi.RpMember], live: Mapping[int, abi.RpPolicy]) -> None:
    """Clear the entries a writer killed before its flip left (used, not
    live; the caller holds the group lock, so no live writer made them):
    their sockets are still in the array, and the kernel refuses a socket
    that is in one already (EBUSY), so the listener could not join again."""
    for index, m in enumerate(members):
        if m.flags & abi.RP_MEMBER_USED and index not in live:
            g.maps["socks"].delete(index)
            members[index] = _freed(members[index])
            g.maps["members"].put(index, members[index])


def _check_endpoint(g: Group, ctl: abi.RpCtl, info: sockets.SocketInfo, what: str) -> None:
    if ctl_endpoint(ctl) != info.key:
        raise InvalidInput(
            f"{what}: socket {info.endpoint} does not belong to group {g.name!r} ({ctl_endpoint(ctl).text})"
        )


def _member_of_socket(g: Group, members: list[abi.RpMember], live: Iterable[int], cookie: int) -> Optional[int]:
    """The index of the live member whose open socket is `cookie`, if any."""
    return next((i for i in live if members[i].cookie == cookie and g.socket_cookie(i) == cookie), None)


def _free_indexes(g: Group, members: list[abi.RpMember], count: int, what: str) -> list[int]:
    free = [i for i, m in enumerate(members) if not m.flags & abi.RP_MEMBER_USED]
    if len(free) < count:
        raise InvalidInput(f"{what}: group {g.name!r} is full ({abi.RP_MAX_MEMBERS} members)")
    return free[:count]


def _put_socket(g: Group, index: int, sock: socket.socket, what: str) -> None:
    try:
        # The kernel checks here that the socket is in a reuseport group.
        g.maps["socks"].put(index, ctypes.c_uint64(sock.fileno()))
    except OSError as e:
        raise InvalidInput(f"{what}: the kernel refused the socket for the socket array: {e.strerror}") from None


def _next_incarnation(previous: abi.RpMember) -> int:
    """The incarnation of a new socket at the index of entry `previous`:
    1, 2, ... 2**32 - 1, 1, ..., never RP_NO_INCARNATION."""
    return previous.incarnation % 0xFFFFFFFF + 1


def _freed(m: abi.RpMember) -> abi.RpMember:
    """The entry of an index whose member left: empty, but for its
    incarnation, so that the next socket there gets a new one and the old
    member's flows do not follow it."""
    return abi.RpMember(incarnation=m.incarnation)


def _record(m: abi.RpMember, name: str, cookie: int, pid: int, fd: int, quic_server_id: Optional[int] = None) -> None:
    """Fill a member entry; its policies are left as they are (a new entry's
    are absent: it is not live until the flip).  quic_server_id: its id in a
    QUIC group."""
    m.name = name.encode()
    m.cookie = cookie
    m.pid = pid
    m.fd = fd
    m.flags = abi.RP_MEMBER_USED
    if quic_server_id is not None:
        m.flags |= abi.RP_MEMBER_QUIC
        m.quic_server_id = quic_server_id
    m.registered_ns = _now_ns()


@dataclass
class Joining:
    """A socket to make a member of an open group (see update_members)."""

    name: str
    pid: int
    fd: int
    sock: socket.socket  # the caller's copy, taken with sockets.take_member_socket; the caller closes it
    info: sockets.SocketInfo
    policy: abi.RpPolicy


def update_members(
    g: Group,
    members: list[abi.RpMember],
    joining: Iterable[Joining] = (),
    moved: Optional[Mapping[int, tuple[int, int]]] = None,
    policies: Optional[Mapping[int, Optional[abi.RpPolicy]]] = None,
    pin: Optional[Callable[[dict[str, int]], Optional[pin_table.PinPlan]]] = None,
) -> dict[str, int]:
    """Every change of a group's membership in ONE publish (the caller holds the group lock).

    `joining` sockets are put into free indexes of the socket array and their
    member entries written (not live yet); `moved` (index -> pid, fd) records
    the new process of a member whose socket lives on; `policies` (index ->
    policy, None = leaves) as Group.publish takes them; `pin`, given
    name -> index of the members after the change, returns the pin plan (None
    keeps the live one).  Then one publish makes it all live, and the program
    is attached through a joining socket (a restarted server makes a new
    reuseport group that has no program).  A refusal before the publish
    undoes the entries it wrote; a writer killed there leaves entries the next
    publish clears.  Returns name -> index of the members after the change.
    """
    joining = list(joining)
    final: dict[int, Optional[abi.RpPolicy]] = dict(policies or {})
    ctl = g.ctl()
    what = f"update group {g.name}"
    live = g.live_policies(members)
    staying = {_name_of(members[i]) for i in live if final.get(i, live[i]) is not None}
    for j in joining:
        check_member_name(j.name)
        check_weight(j.name, j.policy.weight)
        _check_endpoint(g, ctl, j.info, f"add {j.name}")
        holder = _member_of_socket(g, members, live, j.info.cookie)
        if holder is not None and final.get(holder, live[holder]) is not None:
            raise InvalidInput(f"add {j.name}: this socket is already member {_name_of(members[holder])!r}")
        if j.name in staying:
            raise InvalidInput(f"add {j.name}: group {g.name!r} already has a member {j.name!r}")
        staying.add(j.name)
    _clear_leftovers(g, members, live)
    options = g.options()
    # In a QUIC group, each joining member takes the lowest id no staying member has.
    quic_ids = {members[i].quic_server_id for i, pol in {**live, **final}.items()
                if pol is not None and members[i].flags & abi.RP_MEMBER_QUIC}
    placed: dict[int, abi.RpMember] = {}  # index -> its entry before
    try:
        for j, index in zip(joining, _free_indexes(g, members, len(joining), what)):
            g.reset_stats(index)
            _put_socket(g, index, j.sock, f"add {j.name}")
            placed[index] = members[index]
            m = abi.RpMember(incarnation=_next_incarnation(members[index]))
            sid = quic.assign(quic_ids, options.quic_server_id_length) if options.quic else None
            if sid is not None:
                quic_ids.add(sid)
            _record(m, j.name, j.info.cookie, j.pid, j.fd, sid)
            members[index] = m
            g.maps["members"].put(index, m)
            final[index] = j.policy
        for index, (pid, fd) in (moved or {}).items():
            members[index].pid, members[index].fd = pid, fd  # publish writes every member's entry
        after = {**live, **final}
        names = {_name_of(members[i]): i for i, pol in after.items() if pol is not None}
        plan = pin(names) if pin is not None else None
    except BaseException:
        for index, before in placed.items():
            members[index] = before
            with contextlib.suppress(OSError):
                g.maps["socks"].delete(index)
                g.maps["members"].put(index, before)
        raise
    g.publish(final, members, plan)
    if joining and not g.attach_any(j.sock for j in joining):
        raise RpctlError(f"{what}: the kernel refused to attach the program through the new members' sockets")
    return names


def _write(group: Optional[str], layout: Optional[Layout], fn: Callable[[Group, list[abi.RpMember]], object]):
    probe.require_bpf_privileges("change a group")
    layout = layout or Layout()
    group = resolve_group(group, layout)
    with layout.group_lock(group), Group.open(group, layout) as g:
        return fn(g, g.members())


def unregister(name: str, group: Optional[str] = None, layout: Optional[Layout] = None) -> str:
    def apply(g: Group, members: list[abi.RpMember]) -> str:
        idx = g.find(members, name)
        g.publish({idx: None}, members)
        return g.name

    return _write(group, layout, apply)


def set_weights(weights: Mapping[str, int], group: Optional[str] = None, layout: Optional[Layout] = None) -> str:
    """Set the weights of the members named; others keep theirs.  All or nothing."""
    if not weights:
        raise InvalidInput("set weights: no NAME=WEIGHT given")
    for name, w in weights.items():
        check_weight(name, w)

    def apply(g: Group, members: list[abi.RpMember]) -> str:
        policies = g.live_policies(members)
        by_name = {_name_of(members[idx]): idx for idx in policies}
        unknown = [n for n in weights if n not in by_name]
        if unknown:
            raise NotFound(f"set weights: no member {unknown[0]!r} in group {g.name!r}")
        for name, w in weights.items():
            policies[by_name[name]].weight = w
        if all(pol.weight == 0 for pol in policies.values()):
            raise InvalidInput("set weights: every weight would be zero; drain members instead")
        g.publish(policies, members)
        return g.name

    return _write(group, layout, apply)


def set_draining(name: str, draining: bool, force: bool = False, group: Optional[str] = None,
                 layout: Optional[Layout] = None) -> str:
    def apply(g: Group, members: list[abi.RpMember]) -> str:
        policies = g.live_policies(members)
        idx = g.find(members, name)
        if draining:
            policies[idx].flags |= abi.RP_POLICY_DRAINING
            if not force and not g.live_weights(members, policies):
                raise InvalidInput(
                    f"drain {name}: it is the last live member of group {g.name!r}; new connections would go "
                    "to the kernel's own selection (use ", Param("force", flag=True), ")",
                )
        else:
            policies[idx].flags &= ~abi.RP_POLICY_DRAINING
        g.publish(policies, members)
        return g.name

    return _write(group, layout, apply)


def set_adaptive(g: Group, on: bool) -> bool:
    """Set or clear ctl's RP_CTL_ADAPTIVE (the program reads the map "throttle"
    only while it is set), under the group's lock: a publish rewrites ctl too.
    True when it changed.  Looked at without the lock first: serve asks every
    second, and must not wait behind a writer for a flag that is set already."""
    if bool(g.ctl().flags & abi.RP_CTL_ADAPTIVE) == on:
        return False
    with g.layout.group_lock(g.name):
        ctl = g.ctl()
        flags = ctl.flags | abi.RP_CTL_ADAPTIVE if on else ctl.flags & ~abi.RP_CTL_ADAPTIVE
        if flags == ctl.flags:
            return False
        ctl.flags = flags
        g.maps["ctl"].put(0, ctl)
        return True


def put_throttle(g: Group, throttled: Mapping[int, Reason], lease_until_ns: int, sampled_ns: int = 0) -> None:
    """Publish who is throttled until when (CLOCK_MONOTONIC), with why, and
    when serve sampled (0: nobody samples), in one map update.  Only `rpctl
    serve` writes it, so it takes no lock; a reader mid-update sees the old or
    the new bits of a word, each a valid throttle."""
    t = abi.RpThrottle(lease_ns=lease_until_ns if throttled else 0, sampled_ns=sampled_ns)
    for index, why in throttled.items():
        t.bits[index // 64] |= 1 << (index % 64)
        t.queue[index] = min(why.queue, 0xFFFFFFFF)
        t.others[index] = min(why.others, 0xFFFFFFFF)
    g.maps["throttle"].put(0, t)


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
        if alive and not detached and not force:
            raise RpctlError(
                f"unload {group}: no member socket could be reached to detach the program "
                "(members' processes gone?); use ", Param("force", flag=True), " to remove the state anyway",
            )
        layout.remove_group_dir(group)
        return group, detached
