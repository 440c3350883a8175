"""Find the SO_REUSEPORT listeners of a port and the processes that serve them; adopt them all at once.

`rpctl register` needs a pid and an fd for every worker.  For a server that
was not started with rpctl in mind (nginx, envoy, a pre-fork Python server)
finding them by hand means reading `ss -ltnp` and /proc.  discover() does that
reading; adopt() registers what it found.

Who serves a socket
-------------------
inet_diag lists the sockets of a port (cookie, inode, queue); /proc/*/fd
lists the processes holding each one.  Holding is not serving: nginx's master
opens every listener (one per worker with `reuseport`) and forks, so the
master and *every* worker hold *every* listener, under the same fd numbers,
yet each worker serves only its own socket and the master serves none.  What
tells them apart is the epoll instance: each worker adds exactly its own
listener to its epoll (/proc/PID/fdinfo/<epoll fd> lists one "tfd:" line per
watched file, with the file's inode), the master has no epoll at all.  So the
server of a socket is the one holding process whose epoll watches it; when a
single process holds a socket, it is the server whatever it polls with.
Servers that wait on their listeners with poll(), select(), io_uring or a
blocking accept() in several processes cannot be told apart this way: adopt
refuses them and names the pids (register those with `rpctl register`).

Whether a port is a reuseport group
-----------------------------------
Two TCP sockets can only listen on one address and port when both set
SO_REUSEPORT, so an endpoint with several TCP listeners is a reuseport group.
UDP sockets can share a port through SO_REUSEADDR alone, and a single socket
says nothing: for those the option is read from the socket itself, taken from
a holder with pidfd_getfd and closed at once (None when no holder lets us).

Adopting
--------
adopt() checks everything before it changes anything: CAP_SYS_PTRACE, one
endpoint on the port, a told-apart server for every listener, SO_REUSEPORT
on every socket (read from the server's own fd), names that are valid and
collide neither with each other nor with the group's members.  It then
registers every listener with attach=False and attaches the program once,
at the end: attached after the first registration, the program would send
every new connection to that first member while the others are still being
registered (until the attach the kernel's own selection spreads connections
over all the listeners, as before adopt).  A failure halfway (a worker
exiting between the checks and its registration) unregisters what this call
registered, or removes the group when this call created it.  Listeners whose
socket is already a member are skipped, so adopting twice changes nothing;
the program is attached again then, which changes nothing either but mends
an adopt killed between registering and attaching.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import string
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Optional

from . import diag, probe, sockets
from . import group as group_mod
from .errors import InvalidInput, NotFound, RpctlError, UsageError

__all__ = [
    "AdoptResult",
    "Endpoint",
    "EpollTarget",
    "Holder",
    "Listener",
    "adopt",
    "discover",
    "epoll_targets",
    "format_name",
    "parse_epoll_fdinfo",
    "serving_fds",
]

PROTOS = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP}
NAME_FIELDS = ("comm", "pid", "fd", "i")
EVENTPOLL_LINK = "anon_inode:[eventpoll]"
ALREADY_MEMBER = "already a member"
REGISTERED = "registered"

# Processes exit, and close fds, while /proc is read.
_GONE = (FileNotFoundError, ProcessLookupError, PermissionError, NotADirectoryError)


# /proc: epoll instances and process names -------------------------------------


@dataclass(frozen=True)
class EpollTarget:
    """One file an epoll instance watches (a "tfd:" line of its fdinfo)."""

    tfd: int  # the fd number it was added under, in the process that added it
    events: int
    ino: Optional[int]  # inode of the watched file; None on kernels that do not print it


_TFD_RE = re.compile(r"^tfd:\s*(-?\d+)\s+events:\s*([0-9a-fA-F]+)(?:.*?\sino:\s*([0-9a-fA-F]+))?")


def parse_epoll_fdinfo(text: str) -> list[EpollTarget]:
    """The watched files listed in the text of /proc/PID/fdinfo/<epoll fd>.

    fs/eventpoll.c prints one line per watched file, fd and pos in decimal, the rest in hex:
    "tfd:        5 events:     2019 data:     5616d84e0d60  pos:0 ino:88283f sdev:9".
    Other lines (pos, flags, mnt_id, the epoll's own ino) are skipped.
    """
    out = []
    for line in text.splitlines():
        m = _TFD_RE.match(line.strip())
        if m:
            ino = int(m.group(3), 16) if m.group(3) else None
            out.append(EpollTarget(int(m.group(1)), int(m.group(2), 16), ino))
    return out


def epoll_targets(pid: int) -> list[EpollTarget]:
    """Every file watched by an epoll instance process `pid` holds; [] when it is gone."""
    base = f"/proc/{pid}"
    try:
        fds = os.listdir(f"{base}/fd")
    except _GONE:
        return []
    out: list[EpollTarget] = []
    for fd in fds:
        try:
            if os.readlink(f"{base}/fd/{fd}") != EVENTPOLL_LINK:
                continue
            with open(f"{base}/fdinfo/{fd}") as f:
                text = f.read()
        except (*_GONE, OSError):
            continue  # the fd was closed, or the process exited, since listdir
        out.extend(parse_epoll_fdinfo(text))
    return out


def serving_fds(pid: int) -> set[int]:
    """The fds that an epoll instance of process `pid` watches (empty when the process is gone)."""
    return {t.tfd for t in epoll_targets(pid)}


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except (*_GONE, OSError):
        return "?"


# Discovery ------------------------------------------------------------------------


@dataclass(frozen=True)
class Holder:
    pid: int
    fd: int
    comm: str


@dataclass
class Listener:
    """One socket of an endpoint."""

    cookie: int
    inode: int
    uid: int
    queue: int  # TCP: connections waiting in the accept queue; UDP: bytes waiting
    backlog: Optional[int]  # TCP: the accept queue's limit; UDP: None
    holders: list[Holder] = field(default_factory=list)
    epolled_by: list[int] = field(default_factory=list)  # holder pids whose epoll watches it
    server: Optional[Holder] = None

    @property
    def holder_pids(self) -> list[int]:
        return sorted({h.pid for h in self.holders})


@dataclass
class Endpoint:
    """The listening TCP sockets, or bound UDP sockets, of one protocol, address and port."""

    proto: str  # "tcp" / "udp"
    family: int  # AF_INET / AF_INET6
    addr: str
    port: int
    listeners: list[Listener] = field(default_factory=list)
    reuseport: Optional[bool] = None  # None: could not be found out (no holder lets us take its socket)

    @property
    def name(self) -> str:
        host = f"[{self.addr}]" if self.family == socket.AF_INET6 else self.addr
        return f"{self.proto}:{host}:{self.port}"


def _watches(targets: list[EpollTarget], inode: int, fds: set[int]) -> bool:
    # The inode names the socket even when it was added under an fd since
    # closed (a dup); without it only the fd number can tell.
    return any(t.ino == inode if t.ino is not None else t.tfd in fds for t in targets)


def _server(holders: list[Holder], pollers: list[int], targets: dict[int, list[EpollTarget]], inode: int):
    """The one holding process that serves the socket (None when it cannot be told), under the fd
    its epoll watches when there is one: any of its fds of the socket would do, that one reads best."""
    pids = {h.pid for h in holders}
    if len(pids) == 1:
        pid = next(iter(pids))
    elif len(pollers) == 1:
        pid = pollers[0]
    else:
        return None
    mine = [h for h in holders if h.pid == pid]
    polled = {t.tfd for t in targets.get(pid, []) if t.ino in (None, inode)}
    return next((h for h in mine if h.fd in polled), mine[0])


def _read_reuseport(holders: Iterable[Holder]) -> Optional[bool]:
    for h in holders:
        try:
            sock = sockets.take_socket(h.pid, h.fd)
        except (RpctlError, OSError):
            continue
        try:
            return bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT))
        except OSError:
            continue
        finally:
            sock.close()
    return None


def _endpoint_reuseport(ep: Endpoint) -> Optional[bool]:
    if ep.proto == "tcp" and len(ep.listeners) > 1:
        return True  # the kernel lets two TCP sockets listen on one address and port only so
    seen = [_read_reuseport(lst.holders) for lst in ep.listeners]
    if False in seen:
        return False
    return None if None in seen else True


def _check_proto(proto: Optional[str]) -> list[str]:
    if proto is None:
        return list(PROTOS)
    if proto not in PROTOS:
        raise InvalidInput(f"protocol {proto!r}: use tcp or udp")
    return [proto]


def _check_port(port: Optional[int]) -> None:
    if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536):
        raise InvalidInput(f"port {port!r}: use 1..65535")


def discover(
    port: Optional[int] = None, proto: Optional[str] = None, probe_reuseport: bool = True
) -> list[Endpoint]:
    """Every endpoint of this network namespace with listening TCP / bound UDP sockets.

    port and proto ("tcp", "udp") narrow the search.  Without CAP_SYS_PTRACE
    only the caller's own users' processes show up as holders.
    probe_reuseport=False leaves Endpoint.reuseport None where finding it out
    would mean taking a socket (adopt reads it from every socket itself).
    """
    _check_port(port)
    found: list[tuple[str, diag.SocketDiag]] = []
    for name in _check_proto(proto):
        found.extend((name, d) for d in diag.listeners(PROTOS[name], port).values())
    by_inode = diag.holders(d.inode for _, d in found)

    targets: dict[int, list[EpollTarget]] = {}
    comms: dict[int, str] = {}
    for pairs in by_inode.values():
        for pid, _ in pairs:
            if pid not in comms:
                comms[pid] = _comm(pid)
                targets[pid] = epoll_targets(pid)

    endpoints: dict[tuple, Endpoint] = {}
    for name, d in found:
        addr = ipaddress.ip_address(d.local_addr.split("%")[0]).compressed
        key = (name, d.family, addr, d.local_port)
        ep = endpoints.setdefault(key, Endpoint(name, d.family, addr, d.local_port))
        holders = [Holder(pid, fd, comms[pid]) for pid, fd in by_inode.get(d.inode, [])]
        fds_of: dict[int, set[int]] = {}
        for h in holders:
            fds_of.setdefault(h.pid, set()).add(h.fd)
        pollers = sorted(pid for pid, fds in fds_of.items() if _watches(targets[pid], d.inode, fds))
        ep.listeners.append(
            Listener(
                cookie=d.cookie,
                inode=d.inode,
                uid=d.uid,
                queue=d.rqueue,
                backlog=d.wqueue if name == "tcp" else None,
                holders=holders,
                epolled_by=pollers,
                server=_server(holders, pollers, targets, d.inode),
            )
        )

    def order(lst: Listener) -> tuple:
        first = lst.server.pid if lst.server else min(lst.holder_pids, default=0)
        return (lst.server is None, first, lst.server.fd if lst.server else 0, lst.cookie)

    out = sorted(endpoints.values(), key=lambda e: (e.port, e.proto, e.family, e.addr))
    for ep in out:
        ep.listeners.sort(key=order)
        if probe_reuseport or (ep.proto == "tcp" and len(ep.listeners) > 1):
            ep.reuseport = _endpoint_reuseport(ep)
    return out


# Adoption ---------------------------------------------------------------------------


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


def format_name(name_format: str, comm: str, pid: int, fd: int, i: int) -> str:
    """A member name from --name-format; {comm} is the process name with characters
    other than letters, digits, '.', '_' and '-' replaced by '_'; {i} counts from 1."""
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(name_format) if f is not None]
    except ValueError as e:
        raise InvalidInput(f"name format {name_format!r}: {e}") from None
    bad = [f for f in fields if f not in NAME_FIELDS]
    if bad:
        raise InvalidInput(
            f"name format {name_format!r}: unknown field {{{bad[0]}}} (use {{comm}}, {{pid}}, {{fd}}, {{i}})"
        )
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", comm) or "_"
    try:
        name = name_format.format(comm=safe, pid=pid, fd=fd, i=i)
    except (ValueError, TypeError) as e:
        raise InvalidInput(f"name format {name_format!r}: {e}") from None
    return group_mod.check_member_name(name)


def _pick_endpoint(eps: list[Endpoint], port: int, proto: Optional[str], addr: Optional[str]) -> Endpoint:
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
        raise UsageError(f"{what}: several endpoints use it ({names}): say which with --proto and/or --addr")
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
    for i, lst in enumerate(ep.listeners, 1):
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
                "(register it with `rpctl register NAME --pid PID --fd FD`)"
            )
        h = lst.server
        todo.append(_Plan(lst, format_name(name_format, h.comm, h.pid, h.fd, i), h))

    seen: dict[str, _Plan] = {}
    for p in todo:
        other = seen.get(p.name)
        if other is not None:
            raise InvalidInput(
                f"{what}: name {p.name!r} would be given to pid {other.holder.pid} fd {other.holder.fd} and "
                f"to pid {p.holder.pid} fd {p.holder.fd}: add {{fd}} or {{i}} to --name-format"
            )
        seen[p.name] = p
    taken = names_in_use if names_in_use is not None else {name: c for c, (name, _) in members.items()}
    for p in todo:
        if p.name in taken:
            raise InvalidInput(
                f"{what}: group {group_name!r} already has a member {p.name!r} (another socket, cookie "
                f"{taken[p.name]}): choose other names with --name-format"
            )
    return todo, skipped


def _endpoint_info(ep: Endpoint) -> sockets.SocketInfo:
    return sockets.SocketInfo(
        family=ep.family,
        proto=PROTOS[ep.proto],
        addr=ep.addr,
        port=ep.port,
        cookie=0,
        reuseport=True,
        listening=ep.proto == "tcp",
    )


@dataclass
class _GroupState:
    name: str
    members: dict[int, tuple[str, int]] = field(default_factory=dict)  # cookie -> (name, index), socket open
    names: dict[str, int] = field(default_factory=dict)  # every member name -> its cookie (gone ones too)


def _group_for(layout, ep: Endpoint, wanted: Optional[str]) -> _GroupState:
    """The group the endpoint's listeners join (existing or to be made), and its members.

    The same choice register() makes: the group named, else the one steering
    this endpoint, else the default name."""
    from . import abi
    from .state import check_group_name

    info = _endpoint_info(ep)
    name = wanted
    if name is None:
        name = group_mod.find_group_for(layout, info) or group_mod.default_group_name(info)
    check_group_name(name)
    state = _GroupState(name)
    if not os.path.isdir(layout.group_dir(name)):
        return state
    with group_mod.Group.open(name, layout) as g:
        ctl = g.ctl()
        if not group_mod.matches(ctl, info):
            g_proto = "tcp" if ctl.proto == abi.RP_PROTO_TCP else "udp"
            g_addr = sockets.addr_from_bytes(ctl.family, bytes(ctl.addr))
            raise InvalidInput(
                f"adopt {ep.name}: group {name!r} steers {g_proto} {g_addr} port {ctl.port}, not this endpoint"
                + ("" if wanted else ": name a new group with --group")
            )
        members = g.members()
        for idx in g.live_policies(members):
            m = members[idx]
            state.names[m.name.decode(errors="replace")] = m.cookie
            if g.socket_cookie(idx) == m.cookie:
                state.members[m.cookie] = (m.name.decode(errors="replace"), idx)
    return state


def _check_socket(ep: Endpoint, p: _Plan) -> None:
    """Take the server's fd: the process is still there, the fd is still that socket, with SO_REUSEPORT."""
    what = f"adopt {ep.name}"
    h = p.holder
    try:
        sock = sockets.take_socket(h.pid, h.fd)
    except InvalidInput as e:
        raise InvalidInput(f"{what}: {p.name}: {e}") from None
    try:
        info = sockets.inspect(sock)
    finally:
        sock.close()
    if info.cookie != p.listener.cookie:
        raise InvalidInput(
            f"{what}: {p.name}: fd {h.fd} of pid {h.pid} is no longer the socket found (closed?)"
        )
    sockets.check_member_socket(info, f"{what}: {p.name} (pid {h.pid} fd {h.fd})")


def adopt(
    port: int,
    group: Optional[str] = None,
    name_format: str = "{comm}-{pid}",
    proto: Optional[str] = None,
    addr: Optional[str] = None,
    layout=None,
    weight: int = group_mod.DEFAULT_WEIGHT,
) -> list[AdoptResult]:
    """Register every listener of one endpoint of `port`, each under the fd its server process polls.

    All checks come first; nothing changes when one fails.  Listeners whose
    socket is a member already are reported as such and left alone.
    """
    if port is None:
        raise InvalidInput("adopt: give a port")
    _check_port(port)
    _check_proto(proto)
    format_name(name_format, "comm", 1, 0, 1)  # a bad format is refused before anything is read
    what = f"adopt port {port}"
    probe.require_ptrace(what)
    probe.require_kernel()
    probe.require_bpf_privileges(what)
    ep = _pick_endpoint(discover(port, proto, probe_reuseport=False), port, proto, addr)

    from .state import Layout

    layout = layout or Layout()
    state = _group_for(layout, ep, group)
    gname = state.name
    todo, skipped = plan(ep, name_format, state.members, gname, state.names)
    for p in todo:
        _check_socket(ep, p)
    if not todo:
        # Attaching the group's own program again changes nothing, and mends a
        # group whose adopt was killed between registering and attaching.
        _attach(layout, gname, ep)
        return skipped

    done: list[AdoptResult] = []
    created = False
    try:
        for p in todo:
            h = p.holder
            try:
                r = group_mod.register(
                    p.name, h.pid, h.fd, group=gname, weight=weight, layout=layout, attach=False
                )
            except InvalidInput as e:  # e.g. the process exited since the checks
                who = "" if str(e).startswith(f"register {p.name}") else f"{p.name}: "
                raise InvalidInput(f"adopt {ep.name}: {who}{e}") from None
            created = created or r.created
            done.append(
                AdoptResult(
                    p.name,
                    h.pid,
                    h.fd,
                    h.comm,
                    p.listener.cookie,
                    REGISTERED,
                    gname,
                    r.index,
                    ep.name,
                    created=r.created,
                )
            )
        _attach(layout, gname, ep)
    except BaseException:
        _undo(layout, gname, created, [r.name for r in done])
        raise
    by_cookie = {r.cookie: r for r in done + skipped}
    return [by_cookie[lst.cookie] for lst in ep.listeners if lst.cookie in by_cookie]


def _attach(layout, gname: str, ep: Endpoint) -> None:
    """Attach the group's program through the first member socket that can
    still be taken (group_sockets checks its cookie: an fd closed and reused
    for another socket would attach the program to that socket's group)."""
    with layout.group_lock(gname), group_mod.Group.open(gname, layout) as g:
        for sock in group_mod.group_sockets(g):
            g.attach(sock)
            return
    raise InvalidInput(
        f"adopt {ep.name}: no member socket could be taken to attach the program (its processes exited?)"
    )


def _undo(layout, gname: str, created: bool, names: list[str]) -> None:
    """Best effort: leave the group as it was before this call."""
    if created:
        try:
            with layout.ns_lock():
                layout.remove_group_dir(gname)
        except OSError:
            pass
        return
    for name in names:
        try:
            group_mod.unregister(name, group=gname, layout=layout)
        except (RpctlError, OSError):
            pass
