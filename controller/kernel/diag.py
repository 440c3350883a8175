"""Listening sockets, their queues and their owners, read through NETLINK_SOCK_DIAG.

The controller needs to know which sockets form a SO_REUSEPORT group (by socket
cookie, the key the BPF program sees), how deep each one's queue is, and which
processes hold them.  inet_diag answers the first two in one dump per address
family; /proc/*/fd answers the third.

The request and the reply are two fixed C structs (inet_diag_req_v2 and
inet_diag_msg in include/uapi/linux/inet_diag.h), packed and unpacked here with
`struct`.  pyroute2 used to supply them, but importing any of its modules runs
its package __init__ (asyncio, ndb, ipdb, conntrack): 65-90 ms of every
`rpctl status`, half the control plane's budget, and its generic decoder cost
more per message than the whole dump (docs/decisions/0003).  A plain netlink
socket is opened per call, so the dump always sees the network namespace the
calling thread is in *now*, and the kernel's error code in NLMSG_DONE is kept
(a missing udp_diag module must not read as "no sockets").
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
from dataclasses import dataclass
from typing import Collection, Iterable, Iterator, NamedTuple, Optional

__all__ = ["PROTOCOLS", "ListenerDump", "Protocol", "SocketDiag", "WireEndpoint", "decode_listeners", "handshakes",
           "holders", "listeners", "parse_replies", "queue_depths", "wire_endpoint"]

# include/uapi/linux/netlink.h, sock_diag.h, net/tcp_states.h
_NLMSG_ERROR = 2
_NLMSG_DONE = 3
_NLM_F_REQUEST = 0x01
_NLM_F_DUMP = 0x300
_SOCK_DIAG_BY_FAMILY = 20
_NETLINK_SOCK_DIAG = 4
_TCP_LISTEN = 10
_TCP_CLOSE = 7
_TCP_SYN_RECV = 3  # how inet_diag reports a request socket (TCP_NEW_SYN_RECV, 12, in the hash)
_TCP_NEW_SYN_RECV = 12
_NLMSG_HDR = struct.Struct("=IHHII")
# struct inet_diag_req_v2: family, protocol, ext, pad, states; then struct
# inet_diag_sockid, of which only the source port (big-endian) is set.
_REQ = struct.Struct("=BBBxI")
_REQ_SOCKID = struct.Struct("!HH44x")
# struct inet_diag_msg: family, state, timer, retrans; sockid (sport and dport
# big-endian, src[16], dst[16], if, cookie as u32[2] low word first); expires,
# rqueue, wqueue, uid, inode.  Ports are read native and swapped with ntohs.
_MSG = struct.Struct("=BB2xH2x16s16x4xII4xIIII")
_MSG_QUEUE = struct.Struct("=BB2xH2x16s16x4xII4xI")  # the same, up to rqueue: what a look at every endpoint reads
# A filter of ports (include/uapi/linux/inet_diag.h): an nlattr, then struct
# inet_diag_bc_op {code, yes, no}: yes and no are how far to jump on true and on false.
_NLA = struct.Struct("=HH")
_INET_DIAG_REQ_BYTECODE = 1
_BC_OP = struct.Struct("=BBH")
_BC_JMP = 1
_BC_S_EQ = 11
_BC_ENTRY = 12  # one port: S_EQ, its port, JMP
MAX_FILTER_PORTS = 4096  # a filter's bytes fit the attribute's 16-bit length with room to spare
_ID_END = 52  # inet_diag_msg up to the end of its sockid (the cookie): a listener's identity, not its queue
_RECV_SIZE = 1 << 16  # above the 32 KiB the kernel fills per dump skb: no MSG_TRUNC

_FAMILY_NAMES = {socket.AF_INET: "AF_INET", socket.AF_INET6: "AF_INET6"}


class Protocol(NamedTuple):
    """A protocol whose sockets inet_diag dumps here."""

    name: str  # in messages: "TCP", "UDP"
    state: int  # the state inet_diag reports a socket that receives for a port in


# Listening TCP sockets are in LISTEN; UDP sockets that receive for a port are
# bound and unconnected, which the kernel reports as CLOSE.
PROTOCOLS = {socket.IPPROTO_TCP: Protocol("TCP", _TCP_LISTEN), socket.IPPROTO_UDP: Protocol("UDP", _TCP_CLOSE)}


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

    @property
    def address(self) -> str:
        """local_addr as an endpoint names it: compressed, without an IPv6 zone."""
        return ipaddress.ip_address(self.local_addr.split("%")[0]).compressed


def _check(proto: int, port: int | None, family: int | None = None) -> None:
    if proto not in PROTOCOLS:
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


def _ports_filter(ports: Collection[int]) -> bytes:
    """inet_diag bytecode (an INET_DIAG_REQ_BYTECODE attribute) that keeps the
    sockets whose local port is one of `ports`, so that the kernel sends no
    other.  Per port, 12 bytes: S_EQ (the port in a second op), true on to
    the JMP after it, which jumps to the end (kept), false on to the next
    port; the last one's false jump lands 4 bytes past the end (dropped).
    Every jump is a multiple of 4 onto an op or the end, as the kernel's
    audit of a filter (inet_diag_bc_audit) asks."""
    end = _BC_ENTRY * len(ports)
    ops = []
    for i, port in enumerate(sorted(ports)):
        at = _BC_ENTRY * i
        ops += [_BC_OP.pack(_BC_S_EQ, 8, _BC_ENTRY if at + _BC_ENTRY < end else _BC_ENTRY + 4),
                _BC_OP.pack(0, 0, port), _BC_OP.pack(_BC_JMP, 4, end - at - 8)]
    code = b"".join(ops)
    return _NLA.pack(_NLA.size + len(code), _INET_DIAG_REQ_BYTECODE) + code


def _request(family: int, proto: int, port: int | None, states: int, ports: Collection[int] = ()) -> bytes:
    body = _REQ.pack(family, proto, 0, states) + _REQ_SOCKID.pack(port or 0, 0)
    if ports:
        body += _ports_filter(ports)
    header = _NLMSG_HDR.pack(_NLMSG_HDR.size + len(body), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST | _NLM_F_DUMP, 1, 0)
    return header + body


def _decode(data: bytes, off: int, proto: int) -> SocketDiag:
    """The inet_diag_msg after the netlink header at `off`."""
    family, state, sport, src, lo, hi, rqueue, wqueue, uid, inode = _MSG.unpack_from(data, off + _NLMSG_HDR.size)
    addr = socket.inet_ntop(family, src[:4] if family == socket.AF_INET else src)
    return SocketDiag(cookie=lo | hi << 32, inode=inode, uid=uid, family=family, proto=proto, state=state,
                      local_addr=addr, local_port=socket.ntohs(sport), rqueue=rqueue, wqueue=wqueue)


def parse_replies(data: bytes, what: str) -> tuple[list[int], bool]:
    """The offsets (of their netlink headers) of the inet_diag_msg replies in one buffer the
    kernel sent for a dump, and whether the dump ended in it (NLMSG_DONE).  OSError: the
    kernel's error, or EBADMSG for a buffer that does not parse as its replies."""
    found: list[int] = []
    off = 0
    while off + _NLMSG_HDR.size <= len(data):
        length, mtype, _, _, _ = _NLMSG_HDR.unpack_from(data, off)
        if length < _NLMSG_HDR.size or off + length > len(data):
            raise _fail(f"{what}: malformed reply", errno.EBADMSG)
        if mtype in (_NLMSG_DONE, _NLMSG_ERROR):
            # Dump errors come as a negative errno after the header of NLMSG_DONE.
            err = -struct.unpack_from("=i", data, off + _NLMSG_HDR.size)[0] if length >= 20 else 0
            if err:
                # Not an errno the kernel has (a negative one, or past them all): the reply is damaged.
                raise _fail(what, err if 0 < err < 4096 else errno.EBADMSG)
            if mtype == _NLMSG_DONE:
                return found, True
        elif mtype == _SOCK_DIAG_BY_FAMILY:
            if length < _NLMSG_HDR.size + _MSG.size:
                raise _fail(f"{what}: short inet_diag_msg", errno.EBADMSG)
            found.append(off)
        off += (length + 3) & ~3
    return found, False


def _messages(nl: socket.socket, what: str, request: bytes) -> Iterator[tuple[bytes, int]]:
    """The inet_diag_msg replies of one dump: (buffer, offset of the message's netlink header)."""
    try:
        nl.send(request)
    except OSError as e:
        raise _fail(f"{what}: send request", e.errno) from None
    while True:
        try:
            data, _, flags, _ = nl.recvmsg(_RECV_SIZE)
        except OSError as e:
            raise _fail(f"{what}: receive", e.errno) from None
        if flags & socket.MSG_TRUNC:
            raise _fail(f"{what}: reply truncated", errno.EMSGSIZE)
        offsets, done = parse_replies(data, what)
        for off in offsets:
            yield data, off
        if done:
            return


def _listening(family: int, proto: int, port: int | None, handshaking: bool = False,
               ports: Collection[int] = ()) -> tuple[str, int, bytes]:
    """What a dump of one family and protocol is called in messages, the state it
    keeps, and its request: the listening sockets (of `ports` only, when given),
    or (handshaking=True, TCP) the requests still in their handshake."""
    what = f"{_FAMILY_NAMES[family]} {PROTOCOLS[proto].name} dump"
    state = _TCP_SYN_RECV if handshaking else PROTOCOLS[proto].state
    states = (1 << _TCP_SYN_RECV | 1 << _TCP_NEW_SYN_RECV) if handshaking else 1 << state
    return what, state, _request(family, proto, port, states, ports)


def decode_listeners(replies: Iterable[tuple[bytes, int]], family: int, proto: int, port: int | None,
                     handshaking: bool = False) -> list[SocketDiag]:
    """The sockets of a dump's replies (`replies`: buffer, offset) that a dump of one family
    and protocol asked for: listening (or, handshaking=True, TCP requests in their
    handshake) on `port` (None: any).  A reply of another family or state is not one of them."""
    state = _TCP_SYN_RECV if handshaking else PROTOCOLS[proto].state
    found: list[SocketDiag] = []
    # The kernel skips other source ports itself (TCP listeners and UDP); the
    # check below is kept for kernels that do not.
    for data, off in replies:
        if data[off + _NLMSG_HDR.size] != family:
            continue
        d = _decode(data, off, proto)
        if d.state == state and (port is None or d.local_port == port):
            found.append(d)
    return found


def _dump(
    nl: socket.socket, family: int, proto: int, port: int | None, handshaking: bool = False
) -> list[SocketDiag]:
    """One SOCK_DIAG_BY_FAMILY dump of one family and protocol: the listening
    sockets, or (handshaking=True, TCP) the requests still in their handshake."""
    what, _, request = _listening(family, proto, port, handshaking)
    return decode_listeners(_messages(nl, what, request), family, proto, port, handshaking)


def _netlink() -> socket.socket:
    try:
        return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, _NETLINK_SOCK_DIAG)
    except OSError as e:
        raise _fail("open a NETLINK_SOCK_DIAG socket", e.errno) from None


def listeners(proto: int, port: int | None = None, family: int | None = None) -> dict[int, SocketDiag]:
    """TCP sockets in LISTEN, or UDP sockets bound to a port, keyed by cookie.

    family None = both IPv4 and IPv6.  The netlink socket is made per call, so the
    dump is of the network namespace the calling thread is in at that moment.
    """
    _check(proto, port, family)
    families = (socket.AF_INET, socket.AF_INET6) if family is None else (family,)
    with _netlink() as nl:
        return {d.cookie: d for fam in families for d in _dump(nl, fam, proto, port)}


class WireEndpoint(NamedTuple):
    """An endpoint as a dump gives it, compared without decoding: the address packed (4 or 16 bytes)."""

    proto: int  # socket.IPPROTO_TCP / IPPROTO_UDP
    family: int  # socket.AF_INET / AF_INET6
    addr: bytes  # socket.inet_pton(family, address)
    port: int


def wire_endpoint(proto: int, family: int, addr: str, port: int) -> WireEndpoint:
    """The WireEndpoint of an address written as text ("127.0.0.1", "::")."""
    return WireEndpoint(proto, family, socket.inet_pton(family, addr.split("%")[0]), port)


class ListenerDump:
    """One dump of every TCP listener, or UDP socket bound to a port, of one
    (proto, family), of every port or of `ports` only (the kernel filters
    them), kept as the kernel's replies; from them, each only when asked: a
    fingerprint (bytes that change when a listener comes, goes or moves, and
    not with its queue) and the split by endpoint, {WireEndpoint: {cookie:
    rqueue}}.

    No address text and no SocketDiag per reply: a look at a namespace's
    hundreds of listeners costs a few system calls and a slice per reply
    (the fingerprint), or an unpack up to its queue (by endpoint).
    """

    def __init__(self, proto: int, family: int, ports: Optional[Collection[int]] = None,
                 replies: Optional[list[tuple[bytes, int]]] = None):
        """`replies`: the kernel's replies (buffer, offset) of a dump made already; None: dump now."""
        _check(proto, None, family)
        if ports is not None and not 0 < len(ports) <= MAX_FILTER_PORTS:
            raise ValueError(f"a dump of ports reads 1..{MAX_FILTER_PORTS} ports, not {len(ports)}")
        for port in ports or ():
            _check(proto, port)
        self.proto, self.family = proto, family
        what, self._state, request = _listening(family, proto, None, ports=ports or ())
        if replies is None:
            with _netlink() as nl:
                replies = list(_messages(nl, what, request))
        self._replies = replies
        self._split: dict[WireEndpoint, dict[int, int]] | None = None

    def fingerprint(self) -> bytes:
        """Each reply's family, state, timers, ports, addresses, interface and cookie, end to end."""
        start = _NLMSG_HDR.size
        return b"".join([data[off + start:off + start + _ID_END] for data, off in self._replies])

    def by_endpoint(self) -> dict[WireEndpoint, dict[int, int]]:
        if self._split is None:
            self._split = self._decode()
        return self._split

    def _decode(self) -> dict[WireEndpoint, dict[int, int]]:
        out: dict[WireEndpoint, dict[int, int]] = {}
        proto, state, v4 = self.proto, self._state, self.family == socket.AF_INET
        ntohs, unpack, start = socket.ntohs, _MSG_QUEUE.unpack_from, _NLMSG_HDR.size
        for data, off in self._replies:
            fam, st, sport, src, lo, hi, rqueue = unpack(data, off + start)
            if st != state or fam != self.family:
                continue
            # A plain tuple: equal to the WireEndpoint callers look up, and made faster.
            key = (proto, fam, src[:4] if v4 else src, ntohs(sport))
            found = out.get(key)
            if found is None:
                found = out[key] = {}
            found[lo | hi << 32] = rqueue
        return out


def handshakes(port: int) -> int:
    """TCP connections of local port `port` still in their handshake (SYN received,
    final ACK not yet), over both families.

    A request socket is not attributed to a listener in sock_diag (its inode and
    uid read 0), so this is a count for the port, not for one member."""
    _check(socket.IPPROTO_TCP, port)
    with _netlink() as nl:
        return sum(len(_dump(nl, fam, socket.IPPROTO_TCP, port, handshaking=True))
                   for fam in (socket.AF_INET, socket.AF_INET6))


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
