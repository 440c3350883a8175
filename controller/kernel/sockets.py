"""Member sockets: taking a worker's (pidfd_getfd), telling what kind of socket it is, making one.

Also the words every module uses for an endpoint: protocol names
(proto_name, proto_number), EndpointKey (what makes a group's endpoint)
and endpoint_text (how rpctl writes one: tcp:127.0.0.1:8080).
"""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import os
import socket
import stat
from dataclasses import dataclass
from typing import NamedTuple, Optional

from ..contract.errors import InvalidInput, PermissionDenied, RpctlError, Unsupported

# Where `rpctl run` listens when not told (kept here, not in launcher.py,
# so that building the command line does not import the launcher).
DEFAULT_LISTEN = "127.0.0.1:8080"
LISTEN_BACKLOG = 4096         # accept queue of the TCP sockets rpctl makes

SO_COOKIE = 57
SO_PROTOCOL = 38
SO_DOMAIN = 39
SO_ACCEPTCONN = 30
SO_ATTACH_REUSEPORT_EBPF = 52
SO_DETACH_REUSEPORT_BPF = 68

_SYS_PIDFD_OPEN = 434
_SYS_PIDFD_GETFD = 438

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


PROTO_NAMES = {socket.IPPROTO_TCP: "tcp", socket.IPPROTO_UDP: "udp"}
PROTO_NUMBERS = {name: number for number, name in PROTO_NAMES.items()}


def proto_name(number: int) -> str:
    """IPPROTO_TCP -> "tcp", IPPROTO_UDP -> "udp" (rp_ctl.proto holds the same numbers); KeyError otherwise."""
    return PROTO_NAMES[number]


def proto_number(name: str) -> int:
    """ "tcp" -> IPPROTO_TCP, "udp" -> IPPROTO_UDP; KeyError otherwise."""
    return PROTO_NUMBERS[name]


def family_of(addr: str) -> int:
    """AF_INET6 for an IPv6 literal address, AF_INET for an IPv4 one (ValueError otherwise)."""
    return socket.AF_INET6 if ipaddress.ip_address(addr).version == 6 else socket.AF_INET


def endpoint_key(proto: str, addr: str, port: int) -> "EndpointKey":
    """The key of the endpoint PROTO, ADDR, PORT (ADDR a literal address; ValueError otherwise)."""
    return EndpointKey(proto, family_of(addr), ipaddress.ip_address(addr).compressed, port)


def hostport_text(addr: str, port: int) -> str:
    """127.0.0.1:8080, [::1]:53: an address and port as parse_hostport reads them back."""
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def endpoint_text(proto: str, family: int, addr: str, port: int) -> str:
    """How rpctl writes an endpoint everywhere: tcp:127.0.0.1:8080, udp:[::1]:53."""
    host = f"[{addr}]" if family == socket.AF_INET6 else addr
    return f"{proto}:{host}:{port}"


class EndpointKey(NamedTuple):
    """What makes an endpoint, and so a group: one group per key.  Every reader
    (a socket, a group's ctl, a view, a discovered endpoint) gives its own."""

    proto: str    # "tcp" / "udp"
    family: int   # AF_INET / AF_INET6
    addr: str     # compressed literal address, e.g. "127.0.0.1", "::"
    port: int

    @property
    def text(self) -> str:
        return endpoint_text(self.proto, self.family, self.addr, self.port)


@dataclass(frozen=True)
class SocketInfo:
    family: int        # AF_INET / AF_INET6
    proto: int         # IPPROTO_TCP / IPPROTO_UDP
    addr: str          # bound address, e.g. "127.0.0.1", "::"
    port: int
    cookie: int
    reuseport: bool
    listening: bool    # TCP: in LISTEN

    @property
    def proto_name(self) -> str:
        return proto_name(self.proto)

    @property
    def key(self) -> EndpointKey:
        return EndpointKey(self.proto_name, self.family, self.addr, self.port)

    @property
    def endpoint(self) -> str:
        return self.key.text


def take_fd(pid: int, fd: int) -> int:
    """Duplicate fd `fd` of process `pid` into this process (Linux 5.6+)."""
    if pid <= 0 or fd < 0:
        raise InvalidInput(f"take fd {fd} of pid {pid}: pid must be > 0 and fd >= 0")
    pidfd = _libc.syscall(_SYS_PIDFD_OPEN, pid, 0)
    if pidfd < 0:
        err = ctypes.get_errno()
        if err == errno.ESRCH:
            raise InvalidInput(f"take fd {fd} of pid {pid}: no such process")
        if err == errno.ENOSYS:
            raise Unsupported("pidfd_open: kernel too old (Linux 5.3+ needed, 5.6+ for pidfd_getfd)")
        raise OSError(err, f"pidfd_open({pid}): {os.strerror(err)}")
    try:
        newfd = _libc.syscall(_SYS_PIDFD_GETFD, pidfd, fd, 0)
        if newfd < 0:
            err = ctypes.get_errno()
            if err == errno.EBADF:
                raise InvalidInput(f"take fd {fd} of pid {pid}: the process has no fd {fd}")
            if err == errno.EPERM:
                raise PermissionDenied(f"take fd {fd} of pid {pid}: needs CAP_SYS_PTRACE over that process")
            if err == errno.ESRCH:
                raise InvalidInput(f"take fd {fd} of pid {pid}: the process exited")
            if err == errno.ENOSYS:
                raise Unsupported("pidfd_getfd: kernel too old (Linux 5.6+ needed)")
            raise OSError(err, f"pidfd_getfd(pid {pid}, fd {fd}): {os.strerror(err)}")
        return newfd
    finally:
        os.close(pidfd)


def take_socket(pid: int, fd: int) -> socket.socket:
    """The socket behind fd `fd` of process `pid`, as our own socket object."""
    newfd = take_fd(pid, fd)
    if not stat.S_ISSOCK(os.fstat(newfd).st_mode):
        os.close(newfd)
        raise InvalidInput(f"fd {fd} of pid {pid} is not a socket")
    return socket.socket(fileno=newfd)


def cookie_of(sock: socket.socket) -> int:
    return int.from_bytes(sock.getsockopt(socket.SOL_SOCKET, SO_COOKIE, 8), "little")


def inspect(sock: socket.socket) -> SocketInfo:
    family = sock.getsockopt(socket.SOL_SOCKET, SO_DOMAIN)
    proto = sock.getsockopt(socket.SOL_SOCKET, SO_PROTOCOL)
    if family not in (socket.AF_INET, socket.AF_INET6) or proto not in (socket.IPPROTO_TCP, socket.IPPROTO_UDP):
        raise InvalidInput("socket is neither TCP nor UDP over IPv4/IPv6")
    name = sock.getsockname()
    addr = ipaddress.ip_address(name[0].split("%")[0]).compressed
    return SocketInfo(
        family=family,
        proto=proto,
        addr=addr,
        port=name[1],
        cookie=cookie_of(sock),
        reuseport=bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)),
        listening=bool(sock.getsockopt(socket.SOL_SOCKET, SO_ACCEPTCONN)),
    )


def take_member_socket(
    pid: int, fd: int, what: str, cookie: Optional[int] = None
) -> tuple[socket.socket, SocketInfo]:
    """Fd `fd` of process `pid` as a member's socket, checked as the socket array
    will take it (SO_REUSEPORT, bound, TCP: listening) and, given `cookie`, still
    the socket found before.  Errors start with `what`.  The caller closes the
    socket as soon as it can: a copy kept open would keep the listener open, and
    connections queueing on it, after its worker dies."""
    try:
        sock = take_socket(pid, fd)
    except RpctlError as e:
        raise e.within(f"{what}: ") from None
    try:
        info = inspect(sock)
        if cookie is not None and info.cookie != cookie:
            raise InvalidInput(f"{what}: fd {fd} of pid {pid} is no longer the socket found (closed?)")
        check_member_socket(info, f"{what} (pid {pid} fd {fd})")
    except BaseException:
        sock.close()
        raise
    return sock, info


def check_member_socket(info: SocketInfo, what: str) -> None:
    """Refuse sockets the kernel would not let into a reuseport socket array."""
    if not info.reuseport:
        raise InvalidInput(f"{what}: socket {info.endpoint} does not have SO_REUSEPORT set")
    if info.port == 0:
        raise InvalidInput(f"{what}: socket is not bound to a port")
    if info.proto == socket.IPPROTO_TCP and not info.listening:
        raise InvalidInput(f"{what}: TCP socket {info.endpoint} is not listening")


def reuseport_socket(proto: str, host: str, port: int, backlog: int = LISTEN_BACKLOG) -> socket.socket:
    """A new `proto` ("tcp"/"udp") socket with SO_REUSEADDR and SO_REUSEPORT, bound to
    host:port (a literal address; port 0: the kernel picks) and, for TCP, listening:
    it joins, or founds, the reuseport group of that address.  OSError as bind() or
    listen() raise it, the socket closed."""
    kind = socket.SOCK_STREAM if proto_number(proto) == socket.IPPROTO_TCP else socket.SOCK_DGRAM
    sock = socket.socket(family_of(host), kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        if kind == socket.SOCK_STREAM:
            sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def attach_program(sock: socket.socket, prog_fd: int) -> None:
    """Attach to the whole reuseport group the socket belongs to."""
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_EBPF, prog_fd)


def detach_program(sock: socket.socket) -> bool:
    """Detach the group's program; False when none was attached."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_DETACH_REUSEPORT_BPF, 0)
    except OSError as e:
        if e.errno == errno.ENOENT:
            return False
        raise
    return True


PID_MAX_LIMIT = 1 << 22  # include/linux/threads.h: no pid is above it


def process_exists(pid: int) -> bool:
    if not 0 < pid <= PID_MAX_LIMIT:
        return False  # os.kill(0) would signal our own process group; past the limit it overflows
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def addr_bytes(info: SocketInfo) -> bytes:
    return ipaddress.ip_address(info.addr).packed.ljust(16, b"\0")


def addr_from_bytes(family: int, raw: bytes) -> str:
    if family == socket.AF_INET:
        return str(ipaddress.IPv4Address(bytes(raw[:4])))
    return ipaddress.IPv6Address(bytes(raw[:16])).compressed


def parse_hostport(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` -> (literal address, port); ValueError otherwise.

    Only literal addresses: a name would need DNS and could stand for
    several addresses.  One parser for the launcher, the demo worker and
    the load generator.
    """
    host, sep, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        fixed = f"[{host}]:{port_text}"
        # Quoted when it holds what a message of one line cannot show (a newline).
        raise ValueError(f"put an IPv6 address in brackets: {fixed if fixed.isprintable() else repr(fixed)}")
    try:
        addr = ipaddress.ip_address(host) if sep else None
    except ValueError:
        addr = None
    if addr is None:
        raise ValueError("use HOST:PORT or [V6ADDR]:PORT with a literal address")
    if not port_text.isascii() or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"port {port_text!r} is not a number in 0..65535")
    return addr.compressed, int(port_text)


def parse_listen(listen: str, *what: object) -> tuple[str, int]:
    """parse_hostport for a user's address: refused as InvalidInput, `what`
    (message parts, "listen" when none) saying whose address it is."""
    try:
        return parse_hostport(listen)
    except ValueError as e:
        raise InvalidInput(*(what or ("listen",)), f" {listen!r}: {e}") from None


class SelfPipe:
    """A connected socket pair, both ends non-blocking, that wakes a
    selectors loop: a signal (signal.set_wakeup_fd(writer.fileno())) or
    another thread (writer.send) writes; the loop registers `reader` and
    calls drain() when it is readable."""

    def __init__(self) -> None:
        self.reader, self.writer = socket.socketpair()
        self.reader.setblocking(False)
        self.writer.setblocking(False)

    def drain(self) -> None:
        """Read and drop every wake-up byte waiting."""
        try:
            while self.reader.recv(512):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def close(self) -> None:
        self.writer.close()
        self.reader.close()
