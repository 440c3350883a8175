"""Listening sockets, their queues and their owners, read through NETLINK_SOCK_DIAG.

The controller needs to know which sockets form a SO_REUSEPORT group (by socket
cookie, the key the BPF program sees), how deep each one's queue is, and which
processes hold them.  inet_diag answers the first two in one dump per address
family; /proc/*/fd answers the third.

pyroute2 supplies the inet_diag request and reply layouts, but not the transport:
its DiagSocket drops the error code the kernel puts in NLMSG_DONE (a missing
udp_diag module would read as "no sockets") and starts an asyncio loop per
socket.  A plain netlink socket is opened per call instead, so the dump always
sees the network namespace the calling thread is in *now*.  pyroute2 is imported
inside the functions: importing it costs about 0.1 s, which commands that do not
read sockets must not pay.
"""

from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass
from typing import Iterable

__all__ = ["SocketDiag", "listeners", "queue_depths", "holders"]

# include/uapi/linux/netlink.h, sock_diag.h, net/tcp_states.h
_NLMSG_ERROR = 2
_NLMSG_DONE = 3
_NLM_F_REQUEST = 0x01
_NLM_F_DUMP = 0x300
_SOCK_DIAG_BY_FAMILY = 20
_NETLINK_SOCK_DIAG = 4
_TCP_LISTEN = 10
_TCP_CLOSE = 7
_NLMSG_HDR = struct.Struct("=IHHII")
_RECV_SIZE = 1 << 16  # above the 32 KiB the kernel fills per dump skb: no MSG_TRUNC

_PROTO_NAMES = {socket.IPPROTO_TCP: "TCP", socket.IPPROTO_UDP: "UDP"}
_FAMILY_NAMES = {socket.AF_INET: "AF_INET", socket.AF_INET6: "AF_INET6"}
# Listening TCP sockets are in LISTEN; UDP sockets that receive for a port are
# bound and unconnected, which the kernel reports as CLOSE.
_STATE_FOR = {socket.IPPROTO_TCP: _TCP_LISTEN, socket.IPPROTO_UDP: _TCP_CLOSE}


@dataclass(frozen=True)
class SocketDiag:
    """One socket as inet_diag reports it."""

    cookie: int  # SO_COOKIE, the key of the BPF program's socket maps
    inode: int  # matches /proc/*/fd "socket:[inode]" and fstat().st_ino
    uid: int
    family: int  # socket.AF_INET / AF_INET6
    proto: int  # socket.IPPROTO_TCP / IPPROTO_UDP
    state: int  # TCP state number: 10 = LISTEN, 7 = CLOSE (bound UDP)
    local_addr: str
    local_port: int
    rqueue: int  # TCP listener: accept-queue length; UDP: bytes queued for reading
    wqueue: int  # TCP listener: backlog limit; UDP: bytes queued for sending


def _check(proto: int, port: int | None, family: int | None = None) -> None:
    if proto not in _PROTO_NAMES:
        raise ValueError(f"proto must be IPPROTO_TCP or IPPROTO_UDP, not {proto!r}")
    if port is not None and not 0 < port < 65536:
        raise ValueError(f"port must be 1..65535, not {port!r}")
    if family is not None and family not in _FAMILY_NAMES:
        raise ValueError(f"family must be AF_INET or AF_INET6, not {family!r}")


def _fail(what: str, err: int) -> OSError:
    hint = ""
    if err == 2:  # ENOENT: the kernel has no inet_diag handler for this protocol
        hint = " (is the tcp_diag/udp_diag kernel module available?)"
    return OSError(err, f"read sockets through sock_diag: {what}: {os.strerror(err)}{hint}")


def _dump(nl: socket.socket, family: int, proto: int, port: int | None) -> list[SocketDiag]:
    """One SOCK_DIAG_BY_FAMILY dump of the listening sockets of one family and protocol."""
    from pyroute2.netlink.diag import inet_diag_msg, inet_diag_req

    what = f"{_FAMILY_NAMES[family]} {_PROTO_NAMES[proto]} dump"
    state = _STATE_FOR[proto]
    req = inet_diag_req()
    req["header"] = {"type": _SOCK_DIAG_BY_FAMILY, "flags": _NLM_F_REQUEST | _NLM_F_DUMP,
                     "sequence_number": 1, "pid": 0}
    req["sdiag_family"] = family
    req["sdiag_protocol"] = proto
    req["idiag_states"] = 1 << state
    # The kernel skips other source ports itself (TCP listeners and UDP); the
    # check below is kept for kernels that do not.
    req["idiag_sport"] = port or 0
    req.encode()
    try:
        nl.send(req.data)
    except OSError as e:
        raise _fail(f"{what}: send request", e.errno) from None

    found: list[SocketDiag] = []
    while True:
        try:
            data, _, flags, _ = nl.recvmsg(_RECV_SIZE)
        except OSError as e:
            raise _fail(f"{what}: receive", e.errno) from None
        if flags & socket.MSG_TRUNC:
            raise RuntimeError(f"read sockets through sock_diag: {what}: reply truncated")
        off = 0
        while off + _NLMSG_HDR.size <= len(data):
            length, mtype, _, _, _ = _NLMSG_HDR.unpack_from(data, off)
            if length < _NLMSG_HDR.size or off + length > len(data):
                raise RuntimeError(f"read sockets through sock_diag: {what}: malformed reply")
            if mtype in (_NLMSG_DONE, _NLMSG_ERROR):
                # Dump errors come as a negative errno after the header of NLMSG_DONE.
                err = -struct.unpack_from("=i", data, off + _NLMSG_HDR.size)[0] if length >= 20 else 0
                if err:
                    raise _fail(what, err)
                if mtype == _NLMSG_DONE:
                    return found
            elif mtype == _SOCK_DIAG_BY_FAMILY:
                msg = inet_diag_msg(data, offset=off)
                msg.decode()
                if msg["idiag_state"] == state and (port is None or msg["idiag_sport"] == port):
                    # The kernel writes the cookie as u32[2], low word first; pyroute2
                    # reads a native u64, which is only right on little-endian hosts.
                    lo, hi = struct.unpack("=II", struct.pack("=Q", msg["idiag_cookie"]))
                    found.append(SocketDiag(
                        cookie=lo | hi << 32, inode=msg["idiag_inode"], uid=msg["idiag_uid"],
                        family=msg["idiag_family"], proto=proto, state=msg["idiag_state"],
                        local_addr=msg["idiag_src"], local_port=msg["idiag_sport"],
                        rqueue=msg["idiag_rqueue"], wqueue=msg["idiag_wqueue"]))
            off += (length + 3) & ~3


def listeners(proto: int, port: int | None = None, family: int | None = None) -> dict[int, SocketDiag]:
    """TCP sockets in LISTEN, or UDP sockets bound to a port, keyed by cookie.

    family None = both IPv4 and IPv6.  The netlink socket is made per call, so the
    dump is of the network namespace the calling thread is in at that moment.
    """
    _check(proto, port, family)
    families = (socket.AF_INET, socket.AF_INET6) if family is None else (family,)
    try:
        nl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, _NETLINK_SOCK_DIAG)
    except OSError as e:
        raise _fail("open a NETLINK_SOCK_DIAG socket", e.errno) from None
    with nl:
        return {d.cookie: d for fam in families for d in _dump(nl, fam, proto, port)}


def queue_depths(proto: int, cookies: Iterable[int], port: int | None = None) -> dict[int, int]:
    """rqueue per cookie, for the cookies that still exist (missing cookie = socket gone).

    A dump is one system call round trip for the whole group; inet_diag's
    exact-match lookup would need each socket's addresses and one request each.
    """
    found = listeners(proto, port)
    return {c: found[c].rqueue for c in cookies if c in found}


def holders(inodes: Iterable[int]) -> dict[int, list[tuple[int, int]]]:
    """For each socket inode, the (pid, fd) pairs of processes holding it.

    Read from /proc/*/fd (readlink 'socket:[INODE]').  Processes that vanish or
    deny access mid-scan are skipped.  Every requested inode is a key; an empty list means no visible holder.
    Without CAP_SYS_PTRACE only the caller's own users' processes are visible.
    """
    want = {f"socket:[{i}]": i for i in inodes}
    out: dict[int, list[tuple[int, int]]] = {i: [] for i in want.values()}
    if not want:
        return out
    gone = (FileNotFoundError, ProcessLookupError, PermissionError, NotADirectoryError)
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except gone:
            continue
        for fd in fds:
            try:
                inode = want.get(os.readlink(f"{fd_dir}/{fd}"))
            except gone:
                continue  # the fd was closed, or the process exited, since listdir
            if inode is not None:
                out[inode].append((int(pid), int(fd)))
    for pairs in out.values():
        pairs.sort()
    return out
