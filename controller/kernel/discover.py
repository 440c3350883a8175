"""Find the SO_REUSEPORT listeners of a port and the processes that serve them.

`rpctl register` needs a pid and an fd for every worker.  For a server that
was not started with rpctl in mind (nginx, envoy, a pre-fork Python server)
finding them by hand means reading `ss -ltnp` and /proc.  discover() does that
reading; adopt (controller/ops/adopt.py) registers what it found.

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
refuses them and names the pids (register those one by one).

Whether a port is a reuseport group
-----------------------------------
Two TCP sockets can only listen on one address and port when both set
SO_REUSEPORT, so an endpoint with several TCP listeners is a reuseport group.
UDP sockets can share a port through SO_REUSEADDR alone, and a single socket
says nothing: for those the option is read from the socket itself, taken from
a holder with pidfd_getfd and closed at once (None when no holder lets us).
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Optional

from ..contract.errors import InvalidInput, RpctlError
from . import diag, sockets

__all__ = [
    "Endpoint",
    "EpollTarget",
    "Holder",
    "Identity",
    "Listener",
    "discover",
    "epoll_targets",
    "identity",
    "parse_epoll_fdinfo",
    "serving_fds",
]

EVENTPOLL_LINK = "anon_inode:[eventpoll]"

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


@dataclass(frozen=True)
class Identity:
    """What an adopt rule matches a serving process on; None where /proc does not tell."""

    comm: str
    exe: Optional[str]     # /proc/PID/exe
    uid: Optional[int]     # effective user id
    cgroup: Optional[str]  # cgroup v2 path ("0::" line of /proc/PID/cgroup)


def identity(pid: int) -> Identity:
    base = f"/proc/{pid}"
    try:
        exe: Optional[str] = os.readlink(f"{base}/exe")
    except (*_GONE, OSError):
        exe = None
    uid = cgroup = None
    try:
        with open(f"{base}/status") as f:
            for line in f:
                if line.startswith("Uid:"):
                    uid = int(line.split()[2])
                    break
        with open(f"{base}/cgroup") as f:
            for line in f:
                if line.startswith("0::"):
                    cgroup = line[3:].strip()
    except (*_GONE, OSError, ValueError, IndexError):
        pass
    return Identity(_comm(pid), exe, uid, cgroup)


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
    def key(self) -> sockets.EndpointKey:
        return sockets.EndpointKey(self.proto, self.family, self.addr, self.port)

    @property
    def name(self) -> str:
        return self.key.text


def holders_of(inodes: Iterable[int]) -> dict[int, list[Holder]]:
    """For each socket inode, the processes holding it (by pid, then fd), with their comm.
    One scan of /proc/*/fd for all of them (diag.holders)."""
    comms: dict[int, str] = {}
    out: dict[int, list[Holder]] = {}
    for inode, pairs in diag.holders(inodes).items():
        for pid, _ in pairs:
            if pid not in comms:
                comms[pid] = _comm(pid)
        out[inode] = [Holder(pid, fd, comms[pid]) for pid, fd in pairs]
    return out


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


def check_proto(proto: Optional[str]) -> list[str]:
    if proto is None:
        return list(sockets.PROTO_NUMBERS)
    if proto not in sockets.PROTO_NUMBERS:
        raise InvalidInput(f"protocol {proto!r}: use tcp or udp")
    return [proto]


def check_port(port: Optional[int]) -> None:
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
    check_port(port)
    found: list[tuple[str, diag.SocketDiag]] = []
    for name in check_proto(proto):
        found.extend((name, d) for d in diag.listeners(sockets.proto_number(name), port).values())
    by_inode = holders_of(d.inode for _, d in found)
    pids = {h.pid for holders in by_inode.values() for h in holders}
    targets = {pid: epoll_targets(pid) for pid in pids}

    endpoints: dict[tuple, Endpoint] = {}
    for name, d in found:
        key = (name, d.family, d.address, d.local_port)
        ep = endpoints.setdefault(key, Endpoint(name, d.family, d.address, d.local_port))
        holders = by_inode.get(d.inode, [])
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
