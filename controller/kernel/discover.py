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
servers of a socket are the holding processes whose epoll watches it, and
those with a thread blocked in accept() on it (/proc/PID/task/*/syscall names
the call and its fd): a prefork server whose children share each listener
has several servers per socket, its parent (which holds them all) none.
When no holder is seen serving and a single process holds the socket, that
one is taken as its server, whatever it polls with (Listener.weak: a process
in poll() or select(), or a worker that is busy between two accept()s, looks
the same as a parent that only holds the socket).  Several holders of which
none is seen serving (poll(), select(), io_uring, or a blocking accept()
between two calls) cannot be told apart: adopt refuses them and names the
pids (register those one by one).

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
from .proc_files import read_text

__all__ = [
    "Endpoint",
    "EpollTarget",
    "Holder",
    "Identity",
    "Listener",
    "discover",
    "epoll_targets",
    "identity",
    "accepting_fds",
    "cgroup_of",
    "parse_epoll_fdinfo",
    "parse_syscall",
    "servers_of",
    "serving_fds",
    "uid_of_status",
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


# accept() and accept4() by machine: a thread blocked in one on a listener's fd serves it.
ACCEPT_SYSCALLS = {"x86_64": (43, 288), "aarch64": (202, 242), "riscv64": (202, 242), "i686": (),
                   "armv7l": (285, 366), "ppc64le": (330, 344), "s390x": (), "loongarch64": (202, 242)}


def parse_syscall(text: str) -> Optional[tuple[int, int]]:
    """(syscall number, first argument) of the text of /proc/PID/task/TID/syscall, None
    when the thread is not blocked in a call ("running", "-1 ...")."""
    parts = text.split()
    try:
        nr = int(parts[0])
        return (nr, int(parts[1], 16)) if nr >= 0 else None
    except (IndexError, ValueError):
        return None


def accepting_fds(pid: int) -> set[int]:
    """The fds some thread of process `pid` is blocked in accept() on now (empty when
    gone, or on a machine whose call numbers are not known)."""
    calls = ACCEPT_SYSCALLS.get(os.uname().machine, ())
    if not calls:
        return set()
    base = f"/proc/{pid}/task"
    try:
        tids = os.listdir(base)
    except _GONE:
        return set()
    out = set()
    for tid in tids:
        try:
            with open(f"{base}/{tid}/syscall") as f:
                call = parse_syscall(f.read())
        except (*_GONE, OSError):
            continue
        if call is not None and call[0] in calls:
            out.add(call[1])
    return out


def _comm(pid: int) -> str:
    text = _proc_text(f"/proc/{pid}/comm")
    return "?" if text is None else text.strip()


@dataclass(frozen=True)
class Identity:
    """What an adopt rule matches a serving process on; None where /proc does not tell."""

    comm: str
    exe: Optional[str]     # /proc/PID/exe
    uid: Optional[int]     # effective user id
    cgroup: Optional[str]  # cgroup v2 path ("0::" line of /proc/PID/cgroup)


def uid_of_status(text: str) -> Optional[int]:
    """The effective user id in the text of /proc/PID/status (the second number of its Uid: line)."""
    for line in text.splitlines():
        if line.startswith("Uid:"):
            ids = line[len("Uid:"):].split()
            return int(ids[1]) if len(ids) > 1 and ids[1].isascii() and ids[1].isdigit() else None
    return None


def cgroup_of(text: str) -> Optional[str]:
    """The cgroup v2 path in the text of /proc/PID/cgroup (its "0::" line)."""
    found = None
    for line in text.splitlines():
        if line.startswith("0::"):
            found = line[3:].strip()
    return found


def _proc_text(path: str) -> Optional[str]:
    try:
        return read_text(path)
    except (*_GONE, OSError):
        return None


def identity(pid: int) -> Identity:
    base = f"/proc/{pid}"
    try:
        exe: Optional[str] = os.readlink(f"{base}/exe")
    except (*_GONE, OSError):
        exe = None
    status, cgroup = _proc_text(f"{base}/status"), _proc_text(f"{base}/cgroup")
    return Identity(_comm(pid), exe, uid_of_status(status) if status is not None else None,
                    cgroup_of(cgroup) if cgroup is not None else None)


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
    server: Optional[Holder] = None  # the first of servers; the sole holder when none is seen serving
    # Every holder seen serving it (its epoll watches it, or a thread waits in accept() on it),
    # one per process, by pid: several for a listener that a prefork server's children share.
    servers: list[Holder] = field(default_factory=list)

    @property
    def weak(self) -> bool:
        """Its server is only the one process holding it, not seen serving it."""
        return self.server is not None and not self.servers

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


def _servers(holders: list[Holder], pollers: list[int], targets: dict[int, list[EpollTarget]],
             inode: int) -> list[Holder]:
    """The holders serving the socket, one per process (pollers: the pids seen serving it),
    each under the fd its epoll watches when there is one: any of its fds of the socket
    would do, that one reads best."""
    out = []
    for pid in pollers:
        mine = [h for h in holders if h.pid == pid]
        polled = {t.tfd for t in targets.get(pid, []) if t.ino in (None, inode)}
        out.append(next((h for h in mine if h.fd in polled), mine[0]))
    return out


def _server(holders: list[Holder], servers: list[Holder]) -> Optional[Holder]:
    """The first server; the only holding process when none is seen serving; None when
    several hold it and none is seen serving (it cannot be told)."""
    if servers:
        return servers[0]
    return holders[0] if len({h.pid for h in holders}) == 1 else None


def _pollers(holders: list[Holder], targets: dict[int, list[EpollTarget]], accepting: dict[int, set[int]],
             inode: int) -> tuple[list[int], list[int]]:
    """(pids whose epoll watches the socket, pids seen serving it: those and the ones in accept() on it)."""
    fds_of: dict[int, set[int]] = {}
    for h in holders:
        fds_of.setdefault(h.pid, set()).add(h.fd)
    epolled = sorted(pid for pid, fds in fds_of.items() if _watches(targets[pid], inode, fds))
    serving = sorted(pid for pid, fds in fds_of.items() if pid in epolled or fds & accepting[pid])
    return epolled, serving


def servers_of(inodes: Iterable[int]) -> dict[int, list[Holder]]:
    """For each socket inode, the processes seen serving it (discover's rule; one scan of /proc)."""
    by_inode = holders_of(inodes)
    pids = {h.pid for holders in by_inode.values() for h in holders}
    targets = {pid: epoll_targets(pid) for pid in pids}
    accepting = {pid: accepting_fds(pid) for pid in pids}
    return {inode: _servers(holders, _pollers(holders, targets, accepting, inode)[1], targets, inode)
            for inode, holders in by_inode.items()}


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
    accepting = {pid: accepting_fds(pid) for pid in pids}

    endpoints: dict[tuple, Endpoint] = {}
    for name, d in found:
        key = (name, d.family, d.address, d.local_port)
        ep = endpoints.setdefault(key, Endpoint(name, d.family, d.address, d.local_port))
        holders = by_inode.get(d.inode, [])
        epolled, serving = _pollers(holders, targets, accepting, d.inode)
        servers = _servers(holders, serving, targets, d.inode)
        ep.listeners.append(
            Listener(
                cookie=d.cookie,
                inode=d.inode,
                uid=d.uid,
                queue=d.rqueue,
                backlog=d.wqueue if name == "tcp" else None,
                holders=holders,
                epolled_by=epolled,
                server=_server(holders, servers),
                servers=servers,
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
