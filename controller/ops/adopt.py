"""Adopt a running server: register every listener of one endpoint of a port at once.

discover() (controller/kernel/discover.py) finds the listeners of the port and the
process that serves each one; adopt() registers them all.

adopt() checks everything before it changes anything: CAP_SYS_PTRACE, one
endpoint on the port, a told-apart server for every listener, names that are
valid and collide neither with each other nor with the group's members, and
every listener's socket taken from its server's own fd (still there, still
that socket, SO_REUSEPORT).  It then registers them all in ONE publish
(registration.register_all), and attaches the program after it: attached
after a first member alone, the program would send it every new connection
(until the attach the kernel's own selection spreads connections over all
the listeners, as before adopt).  All or nothing: a listener refused leaves
the group as it was, and no group when this call was to create it.
Listeners whose socket is already a member are skipped, so adopting twice
changes nothing; the program is attached again then, which changes nothing
either but mends an adopt killed between publishing and attaching.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
from dataclasses import dataclass, field
from typing import Optional

from ..contract.errors import InvalidInput, NotFound, UsageError
from ..contract.refs import Call, Param
from ..kernel import discover as discovery
from ..kernel import probe
from ..kernel.discover import Endpoint, Holder, Listener, check_port, check_proto
from ..store.generation import Group
from ..store.lifecycle import group_sockets
from ..store.lookup import default_group_name, find_group_for
from ..store.membership import NewMember
from ..store.options import GroupOptions
from ..store.policy import DEFAULT_WEIGHT
from ..store.registration import register_all
from ..tables.naming import DEFAULT_FORMAT, Newcomer, assign_names, format_name

__all__ = ["ALREADY_MEMBER", "REGISTERED", "AdoptResult", "adopt", "format_name", "plan"]

ALREADY_MEMBER = "already a member"
REGISTERED = "registered"


@dataclass
class AdoptResult:
    name: str  # the member's name (for an existing member: the name it has)
    pid: int
    fd: int
    comm: str
    cookie: int
    status: str  # "registered" or "already a member"
    group: str
    index: int  # its index in the group's socket array
    endpoint: str = ""  # e.g. "tcp:127.0.0.1:8080"
    created: bool = False  # this call created the group


def pick_endpoint(eps: list[Endpoint], port: int, proto: Optional[str], addr: Optional[str]) -> Endpoint:
    what = f"adopt port {port}"
    if addr is not None:
        try:
            want = ipaddress.ip_address(addr).compressed
        except ValueError:
            raise InvalidInput(f"{what}: {addr!r} is not an IP address") from None
        eps = [e for e in eps if e.addr == want]
    if not eps:
        kinds = f"{proto.upper()} " if proto else "TCP or UDP "
        where = f" on {addr}" if addr else ""
        raise NotFound(f"{what}: no {kinds}socket listens on port {port}{where} in this network namespace")
    if len(eps) > 1:
        names = ", ".join(e.name for e in eps)
        raise UsageError(
            f"{what}: several endpoints use it ({names}): say which with ", Param("proto"), " and/or ", Param("addr")
        )
    return eps[0]


@dataclass
class _Plan:
    listener: Listener
    name: str
    holder: Holder


def plan(
    ep: Endpoint,
    name_format: str,
    members: dict[int, tuple[str, int]],
    group_name: str,
    names_in_use: Optional[dict[str, int]] = None,
) -> tuple[list[_Plan], list[AdoptResult]]:
    """Who gets registered under which name, and who is a member already.

    members: cookie -> (name, index) of the group's members whose socket is
    open; names_in_use: every member name -> cookie (default: those of
    members).  Pure: refuses (InvalidInput) listeners without a told-apart
    server, and names that collide.
    """
    what = f"adopt {ep.name}"
    todo: list[_Plan] = []
    skipped: list[AdoptResult] = []
    for lst in ep.listeners:
        if lst.cookie in members:
            name, index = members[lst.cookie]
            h = lst.server or (lst.holders[0] if lst.holders else Holder(0, -1, "?"))
            skipped.append(
                AdoptResult(name, h.pid, h.fd, h.comm, lst.cookie, ALREADY_MEMBER, group_name, index, ep.name)
            )
            continue
        if lst.server is None:
            sock = f"socket cookie {lst.cookie}"
            if not lst.holders:
                raise InvalidInput(f"{what}: no process visible here holds {sock} (a kernel socket?)")
            pids = ",".join(map(str, lst.holder_pids))
            if lst.epolled_by:
                polls = f"the epolls of pids {','.join(map(str, lst.epolled_by))} all watch it"
            else:
                polls = "none of them epolls it"
            raise InvalidInput(
                f"{what}: cannot tell which process serves {sock}: pids {pids} hold it and {polls} "
                "(register it with ", Call("register", "NAME", pid="PID", fd="FD"), ")",
            )
        todo.append(_Plan(lst, "", lst.server))

    taken = names_in_use if names_in_use is not None else {name: c for c, (name, _) in members.items()}
    names = assign_names(name_format, [Newcomer(p.holder.comm, p.holder.pid, p.holder.fd) for p in todo], taken)
    for p, name in zip(todo, names):
        p.name = name

    seen: dict[str, _Plan] = {}
    for p in todo:
        other = seen.get(p.name)
        if other is not None:
            raise InvalidInput(
                f"{what}: name {p.name!r} would be given to pid {other.holder.pid} fd {other.holder.fd} and "
                f"to pid {p.holder.pid} fd {p.holder.fd}: add {{fd}} or {{i}} to ", Param("name_format"),
            )
        seen[p.name] = p
    for p in todo:
        if p.name in taken:
            raise InvalidInput(
                f"{what}: group {group_name!r} already has a member {p.name!r} (another socket, cookie "
                f"{taken[p.name]}): choose other names with ", Param("name_format"),
            )
    return todo, skipped


@dataclass
class _GroupState:
    name: str
    members: dict[int, tuple[str, int]] = field(default_factory=dict)  # cookie -> (name, index), socket open
    names: dict[str, int] = field(default_factory=dict)  # every member name -> its cookie (gone ones too)


def _group_for(layout, ep: Endpoint, wanted: Optional[str]) -> _GroupState:
    """The group the endpoint's listeners join (existing or to be made), and its members.

    The same choice register() makes: the group named, else the one steering
    this endpoint, else the default name."""
    from ..store.state import check_group_name

    name = wanted
    if name is None:
        name = find_group_for(ep.key, layout) or default_group_name(ep.key)
    check_group_name(name)
    state = _GroupState(name)
    if not os.path.isdir(layout.group_dir(name)):
        return state
    with Group.open(name, layout) as g:
        steered = g.endpoint_key()
        if steered != ep.key:
            raise InvalidInput(
                f"adopt {ep.name}: group {name!r} steers {steered.text}, not this endpoint",
                *(() if wanted else (": name a new group with ", Param("group"))),
            )
        members = g.members()
        for name, idx in g.member_index(members).items():
            m = members[idx]
            state.names[name] = m.cookie
            if g.socket_open(idx, m):
                state.members[m.cookie] = (name, idx)
    return state


def adopt(
    port: int,
    group: Optional[str] = None,
    name_format: str = DEFAULT_FORMAT,
    proto: Optional[str] = None,
    addr: Optional[str] = None,
    layout=None,
    weight: int = DEFAULT_WEIGHT,
    options: Optional[GroupOptions] = None,
) -> list[AdoptResult]:
    """Register every listener of one endpoint of `port`, each under the fd its server process polls.
    `options`: the group's creation options (when adopt creates it).

    All checks come first; nothing changes when one fails.  Listeners whose
    socket is a member already are reported as such and left alone.
    """
    if port is None:
        raise InvalidInput("adopt: give a port")
    check_port(port)
    check_proto(proto)
    format_name(name_format, "comm", 1, 0, 1)  # a bad format is refused before anything is read
    options = (options or GroupOptions()).check()
    what = f"adopt port {port}"
    probe.require_ptrace(what)
    probe.require_kernel()
    probe.require_bpf_privileges(what)
    ep = pick_endpoint(discovery.discover(port, proto, probe_reuseport=False), port, proto, addr)

    from ..store.state import Layout

    layout = layout or Layout()
    state = _group_for(layout, ep, group)
    gname = state.name
    todo, skipped = plan(ep, name_format, state.members, gname, state.names)
    if not todo:
        # Attaching the group's own program again changes nothing, and mends a
        # group whose adopt was killed between publishing and attaching.
        _attach(layout, gname, ep)
        return skipped

    news = [NewMember(p.name, p.holder.pid, p.holder.fd, weight, cookie=p.listener.cookie,
                      shared=len(p.listener.servers) > 1, what=f"adopt {ep.name}: {p.name}") for p in todo]
    regs = register_all(news, gname, layout, options=options, what=f"adopt {ep.name}")
    done = [AdoptResult(p.name, p.holder.pid, p.holder.fd, p.holder.comm, p.listener.cookie, REGISTERED, gname,
                        r.index, ep.name, created=r.created) for p, r in zip(todo, regs)]
    by_cookie = {r.cookie: r for r in done + skipped}
    return [by_cookie[lst.cookie] for lst in ep.listeners if lst.cookie in by_cookie]


def _attach(layout, gname: str, ep: Endpoint) -> None:
    """Attach the group's program through the first member socket that can
    still be taken (group_sockets checks its cookie: an fd closed and reused
    for another socket would attach the program to that socket's group)."""
    with layout.group_lock(gname), Group.open(gname, layout) as g:
        with contextlib.closing(group_sockets(g)) as socks:
            if g.attach_any(socks):
                return
    raise InvalidInput(
        f"adopt {ep.name}: no member socket could be taken to attach the program (its processes exited?)"
    )

