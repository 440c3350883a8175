"""A group's members changed: the one write path of membership.

update_members() takes every change of a group's membership at once:
sockets that join (new members, or the new socket of the member of that
name: a replacement), members that leave, members whose socket lives on in
another process, new policies of the others, and a pin plan.  It checks
the whole change first (place(), pure), then writes the new entries and
makes everything live in ONE publish: a refusal changes nothing, and a
writer killed halfway leaves entries that are not live, which the next
write clears.  register, unregister, adopt, join, the launcher
(registration.py), reconcile and serve all change members through it.

A member's server generation (its number and the verdict on it,
docs/decisions/0021) is written here too: a new member's from its
NewMember, a member's new one through `marks`; a replacement keeps its own.

QUIC server ids are given here alone (quic_server_id()): each member of
a QUIC group has one, the one asked for, else its own when its socket is
replaced, else the lowest one free.  The launcher asks for its children's
ids before it starts them.
"""

from __future__ import annotations

import contextlib
import ctypes
import socket
import time
from dataclasses import dataclass
from typing import Callable, Collection, Iterable, Iterator, Mapping, NamedTuple, Optional, Sequence

from ..contract import abi
from ..contract.errors import InvalidInput, RpctlError
from ..contract.refs import Param
from ..kernel import sockets
from ..tables import pin_table, quic
from ..tables.naming import check_member_name
from ..tables.server_generations import Verdict
from .generation import Group, freed, name_of
from .options import GroupOptions
from .policy import DEFAULT_WEIGHT, check_weight, new_policy

# The member flags that hold the verdict on its server generation, and what each means.
VERDICT_FLAGS = {Verdict.PROMOTED: abi.RP_MEMBER_PROMOTED, Verdict.ROLLED_BACK: abi.RP_MEMBER_ROLLED_BACK}
MARK_FLAGS = abi.RP_MEMBER_PROMOTED | abi.RP_MEMBER_ROLLED_BACK | abi.RP_MEMBER_CANARY


class Mark(NamedTuple):
    """What a member entry keeps of its server generation: its number (0: not
    known), the verdict on it, and whether it is a canary now."""

    server_gen: int = 0
    verdict: Verdict = Verdict.NONE
    canary: bool = False


NO_MARK = Mark()


def mark_of(m: abi.RpMember) -> Mark:
    """What member entry `m` keeps of its server generation."""
    verdict = next((v for v, bit in VERDICT_FLAGS.items() if m.flags & bit), Verdict.NONE)
    return Mark(m.server_gen, verdict, bool(m.flags & abi.RP_MEMBER_CANARY))


def marked(m: abi.RpMember, mark: Mark) -> abi.RpMember:
    """Entry `m` (changed in place, and returned) with `mark`."""
    m.server_gen = mark.server_gen
    m.flags = (m.flags & ~MARK_FLAGS | VERDICT_FLAGS.get(mark.verdict, 0)
               | (abi.RP_MEMBER_CANARY if mark.canary else 0))
    return m


# Given the members after a change (name -> index), the pin plan to publish with it (None: the live one).
PinChooser = Callable[[dict[str, int]], Optional[pin_table.PinPlan]]


@dataclass(frozen=True)
class NewMember:
    """A socket of a process to make a member: a new one, or (replace) the
    new socket of the member of that name, which keeps its index, policy
    and counters."""

    name: str
    pid: int
    fd: int
    weight: int = DEFAULT_WEIGHT
    draining: bool = False
    replace: bool = False
    quic_server_id: Optional[str] = None  # hex, asked for in a QUIC group
    cookie: Optional[int] = None  # of the socket found before: fd `fd` must still be it
    shared: bool = False  # several processes serve the socket: pid is the first (RP_MEMBER_SHARED)
    what: str = ""  # what its errors start with ("add NAME" when not given)
    mark: Mark = NO_MARK  # its server generation; a replacement keeps its own

    @property
    def label(self) -> str:
        return self.what or f"add {self.name}"


@dataclass(frozen=True)
class Moved:
    """The process a member's socket is now served by (update_members' `moved`)."""

    pid: int
    fd: int
    shared: bool = False  # several processes serve it: pid is the first (RP_MEMBER_SHARED)


@dataclass(frozen=True)
class Joining:
    """A new member with its socket taken (the taker's copy: taken() closes it)."""

    member: NewMember
    sock: socket.socket
    info: sockets.SocketInfo


@dataclass
class Seat:
    """Where a joining socket goes: its index, whether it replaces the member
    there, whether the socket array gets its socket (a member's own socket
    registered again is in the array already), its QUIC server id."""

    index: int
    joining: Joining
    replaces: bool
    new_socket: bool
    quic_server_id: Optional[int] = None


@contextlib.contextmanager
def taken(news: Iterable[NewMember]) -> Iterator[list[Joining]]:
    """The sockets of `news`, every one taken before anything changes (a
    process gone since it was found refuses them all), all closed at the end:
    a kept copy would keep a dead worker's listener open, connections
    queueing on it with no one to accept them."""
    joining: list[Joining] = []
    try:
        for n in news:
            sock, info = sockets.take_member_socket(n.pid, n.fd, n.label, n.cookie)
            joining.append(Joining(n, sock, info))
        yield joining
    finally:
        for j in joining:
            j.sock.close()


def quic_server_id(held: Mapping[str, int], name: str, asked: Optional[int], length: int,
                   what: str = "", group: str = "") -> int:
    """The QUIC server id member `name` gets in a group whose members hold
    `held` (name -> id; its own entry, if any, is the id it has now): `asked`
    (no other member may hold it), else its own, else the lowest id no other
    member holds."""
    others = {other: sid for other, sid in held.items() if other != name}
    if asked is None:
        return held[name] if name in held else quic.assign(others.values(), length)
    for other, sid in others.items():
        if sid == asked:
            raise InvalidInput(
                f"{what}: QUIC server id {quic.format_server_id(asked, length)} is already the id of "
                f"member {other!r} in group {group!r}"
            )
    return asked


def place(
    group: str,
    endpoint: sockets.EndpointKey,
    options: GroupOptions,
    members: Sequence[abi.RpMember],
    live: Mapping[int, abi.RpPolicy],
    in_array: Mapping[int, Optional[int]],
    joining: Sequence[Joining],
    leaving: Collection[int] = (),
) -> list[Seat]:
    """Where each joining socket goes, every refusal raised before anything
    is written (pure).  `members`: the member table; `live`: index -> policy
    of the members present in the live generation; `in_array`: index ->
    cookie of the socket the array holds there (None: emptied); `leaving`:
    indexes that leave in the same change.  A new member takes the lowest
    index no present member has (entries a killed writer left count as
    free: they are cleared first); a replacement keeps its index."""
    staying = {name_of(members[i]): i for i in live if i not in leaving}
    free = iter([i for i in range(len(members)) if i not in live])
    seats: list[Seat] = []
    for j in joining:
        n = j.member
        check_member_name(n.name)
        check_weight(n.name, n.weight)
        if j.info.key != endpoint:
            raise InvalidInput(f"{n.label}: socket {j.info.endpoint} does not belong to group {group!r} "
                               f"({endpoint.text})")
        existing = staying.get(n.name)
        holder = next((i for i in staying.values()
                       if members[i].cookie == j.info.cookie and in_array.get(i) == j.info.cookie), None)
        if holder is not None and holder != existing:
            raise InvalidInput(f"{n.label}: this socket is already member {name_of(members[holder])!r}")
        if any(s.joining.member.name == n.name for s in seats):
            raise InvalidInput(f"{n.label}: group {group!r} already has a member {n.name!r}")
        if existing is not None and not n.replace:
            raise InvalidInput(
                f"{n.label}: group {group!r} already has a member {n.name!r} (use ", Param("replace", flag=True),
                " to swap its socket)",
            )
        if n.quic_server_id is not None and not options.quic:
            raise InvalidInput(f"{n.label}: group {group!r} does not route QUIC by server id")
        if existing is not None:
            seats.append(Seat(existing, j, True, in_array.get(existing) != j.info.cookie))
            continue
        index = next(free, None)
        if index is None:
            raise InvalidInput(f"{n.label}: group {group!r} is full ({abi.RP_MAX_MEMBERS} members)")
        seats.append(Seat(index, j, False, True))
    if options.quic:
        length = options.quic_server_id_length
        held = {name: members[i].quic_server_id for name, i in staying.items()
                if members[i].flags & abi.RP_MEMBER_QUIC}
        # Ids asked for first: a member given the lowest free id must not take one another asked for.
        for s in sorted(seats, key=lambda s: s.joining.member.quic_server_id is None):
            n = s.joining.member
            asked = None if n.quic_server_id is None else quic.parse_server_id(n.quic_server_id, length)
            s.quic_server_id = held[n.name] = quic_server_id(held, n.name, asked, length, n.label, group)
    return seats


def entry(previous: abi.RpMember, seat: Seat, now_ns: int) -> abi.RpMember:
    """The member entry `seat` writes over `previous` (the entry at its
    index).  A replacement keeps its policies and counter bases; a new
    member's entry has none (it is not live until the flip).  A new socket
    at an index gets the next incarnation, so that the flows of the socket
    before do not follow it."""
    j = seat.joining
    m = abi.RpMember.from_buffer_copy(previous) if seat.replaces else abi.RpMember()
    m.incarnation = next_incarnation(previous) if seat.new_socket else previous.incarnation
    m.name = j.member.name.encode()
    m.cookie = j.info.cookie
    m.pid = j.member.pid
    m.fd = j.member.fd
    m.flags = (abi.RP_MEMBER_USED | (abi.RP_MEMBER_SHARED if j.member.shared else 0)
               | (previous.flags & MARK_FLAGS if seat.replaces else 0))
    if not seat.replaces:
        marked(m, j.member.mark)
    if seat.quic_server_id is not None:
        m.flags |= abi.RP_MEMBER_QUIC
        m.quic_server_id = seat.quic_server_id
    m.registered_ns = now_ns
    return m


def next_incarnation(previous: abi.RpMember) -> int:
    """The incarnation of a new socket at the index of entry `previous`:
    1, 2, ... 2**32 - 1, 1, ..., never RP_NO_INCARNATION."""
    return previous.incarnation % 0xFFFFFFFF + 1


def update_members(
    g: Group,
    members: list[abi.RpMember],
    joining: Iterable[Joining] = (),
    moved: Optional[Mapping[int, Moved]] = None,
    policies: Optional[Mapping[int, Optional[abi.RpPolicy]]] = None,
    pin: Optional[PinChooser] = None,
    attach: bool = True,
    what: Optional[str] = None,
    marks: Optional[Mapping[int, Mark]] = None,
) -> dict[str, int]:
    """Every change of a group's membership in ONE publish, all or nothing
    (the caller holds the group lock).

    `joining` sockets take free indexes of the socket array (or, replacing,
    the index of their member); `moved` (index -> Moved) records the new
    process of a member whose socket lives on; `policies` (index -> policy,
    None = leaves) as Group.publish takes them; `pin`, given name -> index
    of the members after the change, returns the pin plan (None keeps the
    live one); `marks` (index -> Mark) what present members keep of
    their server generation from now on.  Everything is checked before anything is written; then one
    publish makes it all live, and with `attach` the program is attached
    through a joining socket (a restarted server makes a new reuseport group
    that has no program).  A refusal while writing undoes the entries
    written; a writer killed there leaves entries the next write clears.
    `what`: what an error of the whole change starts with (a joining
    socket's own errors start with its NewMember.label).  Returns name ->
    index of the members after the change.
    """
    joining = list(joining)
    what = what or f"update group {g.name}"
    final: dict[int, Optional[abi.RpPolicy]] = dict(policies or {})
    live = g.live_policies(members)
    leaving = {i for i, pol in final.items() if pol is None}
    in_array = {i: g.socket_cookie(i) for i in live}
    seats = place(g.name, g.endpoint_key(), g.options(), members, live, in_array, joining, leaving)
    names = {name_of(members[i]): i for i in live if i not in leaving}
    names.update({s.joining.member.name: s.index for s in seats})
    plan = pin(names) if pin is not None else None
    _clear_leftovers(g, members, live)
    written: dict[int, abi.RpMember] = {}  # index -> its entry before
    try:
        # Replacements last: the socket array gives no socket back, so the one a
        # replacement displaced cannot be put back if a later write fails.
        for s in sorted(seats, key=lambda s: s.replaces):
            n = s.joining.member
            if not s.replaces:
                g.reset_stats(s.index)
            if s.new_socket:
                _put_socket(g, s.index, s.joining.sock, n.label)
            written[s.index] = members[s.index]
            members[s.index] = entry(members[s.index], s, time.time_ns())
            g.maps["members"].put(s.index, members[s.index])
            if s.replaces:
                final.setdefault(s.index, live[s.index])
            else:
                final[s.index] = new_policy(n.weight, n.draining)
        for index, to in (moved or {}).items():
            m = members[index]  # publish writes every member's entry
            m.pid, m.fd = to.pid, to.fd
            m.flags = m.flags & ~abi.RP_MEMBER_SHARED | (abi.RP_MEMBER_SHARED if to.shared else 0)
        for index, mark in (marks or {}).items():
            marked(members[index], mark)
    except BaseException:
        for s in seats:
            if s.index not in written:
                continue
            members[s.index] = written[s.index]
            with contextlib.suppress(OSError):
                if not s.replaces:
                    g.maps["socks"].delete(s.index)
                g.maps["members"].put(s.index, written[s.index])
        raise
    g.publish(final, members, plan)
    if attach and joining and not g.attach_any(j.sock for j in joining):
        raise RpctlError(f"{what}: the kernel refused to attach the program through the new members' sockets")
    return names


def _clear_leftovers(g: Group, members: list[abi.RpMember], live: Mapping[int, abi.RpPolicy]) -> None:
    """Clear the entries a writer killed before its flip left (used, not
    live; the caller holds the group lock, so no live writer made them):
    their sockets are still in the array, and the kernel refuses a socket
    that is in one already (EBUSY), so the listener could not join again."""
    for index, m in enumerate(members):
        if m.flags & abi.RP_MEMBER_USED and index not in live:
            g.maps["socks"].delete(index)
            members[index] = freed(members[index])
            g.maps["members"].put(index, members[index])


def _put_socket(g: Group, index: int, sock: socket.socket, what: str) -> None:
    try:
        # The kernel checks here that the socket is in a reuseport group.
        g.maps["socks"].put(index, ctypes.c_uint64(sock.fileno()))
    except OSError as e:
        raise InvalidInput(f"{what}: the kernel refused the socket for the socket array: {e.strerror}") from None
