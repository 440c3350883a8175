"""controller/kernel/sockets.py without privileges: the words for an endpoint, HOST:PORT, and
real sockets of this process on loopback (made, inspected, taken back through a pidfd, which
a process may do to itself).  Attaching a program needs one loaded: the kernel tests do that."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys

import pytest
from rpctl.controller.contract.errors import InvalidInput
from rpctl.controller.kernel import sockets
from rpctl.controller.kernel.sockets import (
    DEFAULT_LISTEN,
    EndpointKey,
    SocketInfo,
    endpoint_text,
    family_of,
    parse_hostport,
    reuseport_socket,
)

# Endpoints in words -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, parsed",
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        ("[::1]:53", ("::1", 53)),
        ("[::]:65535", ("::", 65535)),
        ("[2001:db8:0:0::1]:443", ("2001:db8::1", 443)),  # written back compressed
    ],
)
def test_parse_hostport(text, parsed):
    assert parse_hostport(text) == parsed


@pytest.mark.parametrize(
    "text, says",
    [
        ("::1:53", "put an IPv6 address in brackets: [::1]:53"),
        ("localhost:80", "with a literal address"),
        ("8080", "use HOST:PORT"),
        (":8080", "use HOST:PORT"),
        ("[127.0.0.1:80", "with a literal address"),
        ("127.0.0.1:", "port '' is not a number in 0..65535"),
        ("127.0.0.1:65536", "port '65536' is not a number in 0..65535"),
        ("127.0.0.1:-1", "port '-1' is not a number"),
        ("127.0.0.1:http", "port 'http' is not a number"),
    ],
)
def test_parse_hostport_refuses_with_the_reason(text, says):
    with pytest.raises(ValueError) as refused:
        parse_hostport(text)
    assert says in str(refused.value)


def test_hostport_text_is_read_back_by_parse_hostport():
    assert sockets.hostport_text("127.0.0.1", 8080) == "127.0.0.1:8080"
    assert sockets.hostport_text("::1", 53) == "[::1]:53"
    for addr, port in (("10.1.2.3", 1), ("fe80::1", 65535), ("::", 443)):
        assert parse_hostport(sockets.hostport_text(addr, port)) == (addr, port)


def test_parse_listen_words_a_refusal_as_invalid_input_naming_whose_address():
    assert sockets.parse_listen("[::1]:9464", "metrics: --listen") == ("::1", 9464)
    with pytest.raises(InvalidInput) as refused:
        sockets.parse_listen("localhost:80", "metrics: --listen")
    assert str(refused.value).startswith("metrics: --listen 'localhost:80': ")
    with pytest.raises(InvalidInput, match=r"^listen '1.2.3.4': "):
        sockets.parse_listen("1.2.3.4")


def test_default_listen_is_a_loopback_hostport():
    assert parse_hostport(DEFAULT_LISTEN) == ("127.0.0.1", 8080)


def test_family_of_a_literal_address():
    assert family_of("127.0.0.1") == socket.AF_INET
    assert family_of("0.0.0.0") == socket.AF_INET
    assert family_of("::1") == socket.AF_INET6
    assert family_of("::ffff:127.0.0.1") == socket.AF_INET6
    for bad in ("localhost", "", "[::1]", "127.0.0.256"):
        with pytest.raises(ValueError):
            family_of(bad)


def test_endpoint_text_puts_v6_addresses_in_brackets():
    assert endpoint_text("tcp", socket.AF_INET, "127.0.0.1", 8080) == "tcp:127.0.0.1:8080"
    assert endpoint_text("udp", socket.AF_INET6, "::1", 53) == "udp:[::1]:53"
    assert endpoint_text("udp", socket.AF_INET6, "::", 0) == "udp:[::]:0"


def test_endpoint_text_reads_back_through_parse_hostport():
    for key in (EndpointKey("tcp", socket.AF_INET, "10.0.0.1", 80), EndpointKey("udp", socket.AF_INET6, "fe80::1", 53)):
        proto, _, hostport = key.text.partition(":")
        assert proto == key.proto
        assert parse_hostport(hostport) == (key.addr, key.port)


def test_endpoint_key_is_a_value_and_says_its_text():
    key = EndpointKey("udp", socket.AF_INET6, "::", 5353)
    assert key.text == "udp:[::]:5353"
    assert key == ("udp", socket.AF_INET6, "::", 5353)
    assert key != EndpointKey("tcp", socket.AF_INET6, "::", 5353)
    assert len({key, EndpointKey("udp", socket.AF_INET6, "::", 5353)}) == 1  # one group per key


def test_protocol_names_and_numbers():
    assert sockets.proto_name(socket.IPPROTO_TCP) == "tcp"
    assert sockets.proto_name(socket.IPPROTO_UDP) == "udp"
    assert sockets.proto_number("tcp") == socket.IPPROTO_TCP
    assert sockets.proto_number("udp") == socket.IPPROTO_UDP
    with pytest.raises(KeyError):
        sockets.proto_name(socket.IPPROTO_SCTP)
    with pytest.raises(KeyError):
        sockets.proto_number("sctp")


def test_addresses_to_and_from_the_maps_16_bytes():
    v4 = SocketInfo(socket.AF_INET, socket.IPPROTO_TCP, "127.0.0.1", 80, 1, True, True)
    v6 = SocketInfo(socket.AF_INET6, socket.IPPROTO_UDP, "2001:db8::7", 53, 2, True, False)
    assert sockets.addr_bytes(v4) == bytes([127, 0, 0, 1]) + bytes(12)
    assert len(sockets.addr_bytes(v6)) == 16
    assert sockets.addr_from_bytes(socket.AF_INET, sockets.addr_bytes(v4)) == "127.0.0.1"
    assert sockets.addr_from_bytes(socket.AF_INET6, sockets.addr_bytes(v6)) == "2001:db8::7"


def test_socket_info_words_its_endpoint():
    info = SocketInfo(socket.AF_INET6, socket.IPPROTO_UDP, "::1", 53, 9, True, False)
    assert info.proto_name == "udp"
    assert info.key == EndpointKey("udp", socket.AF_INET6, "::1", 53)
    assert info.endpoint == "udp:[::1]:53"


# Sockets rpctl makes ------------------------------------------------------------------------------


@pytest.fixture
def made():
    """reuseport_socket(...), every socket closed after the test."""
    socks = []

    def make(*args, **kw) -> socket.socket:
        s = reuseport_socket(*args, **kw)
        socks.append(s)
        return s

    yield make
    for s in socks:
        s.close()


@pytest.mark.parametrize(
    "proto, host, family, kind, number",
    [
        ("tcp", "127.0.0.1", socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP),
        ("udp", "127.0.0.1", socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP),
        ("tcp", "::1", socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP),
        ("udp", "::1", socket.AF_INET6, socket.SOCK_DGRAM, socket.IPPROTO_UDP),
    ],
)
def test_reuseport_socket_on_port_0_is_what_inspect_says(made, proto, host, family, kind, number):
    s = made(proto, host, 0)
    assert (s.family, s.type) == (family, kind)
    port = s.getsockname()[1]
    assert port != 0  # the kernel picked one
    assert s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 1
    info = sockets.inspect(s)
    assert (info.family, info.proto, info.addr, info.port) == (family, number, host, port)
    assert info.reuseport is True
    assert info.listening is (proto == "tcp")
    assert info.endpoint == endpoint_text(proto, family, host, port)
    sockets.check_member_socket(info, "register w1")  # the socket array would take it


def test_a_second_reuseport_socket_joins_the_first_ones_port(made):
    first = made("tcp", "127.0.0.1", 0)
    port = first.getsockname()[1]
    second = made("tcp", "127.0.0.1", port)
    assert second.getsockname()[1] == port
    assert sockets.inspect(first).key == sockets.inspect(second).key
    assert sockets.cookie_of(first) != sockets.cookie_of(second)


def test_reuseport_socket_refuses_what_bind_refuses_and_takes_a_backlog(made):
    taken = socket.socket()  # without SO_REUSEPORT: nobody may join its port
    try:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        with pytest.raises(OSError) as refused:
            made("tcp", "127.0.0.1", taken.getsockname()[1])
        assert refused.value.errno == errno.EADDRINUSE
    finally:
        taken.close()
    with pytest.raises(ValueError):
        made("tcp", "localhost", 0)
    with pytest.raises(KeyError):
        made("sctp", "127.0.0.1", 0)
    assert made("tcp", "127.0.0.1", 0, backlog=1).getsockopt(socket.SOL_SOCKET, sockets.SO_ACCEPTCONN) == 1


def test_cookies_are_the_kernels_and_stay(made):
    a, b = made("udp", "127.0.0.1", 0), made("udp", "127.0.0.1", 0)
    assert sockets.cookie_of(a) > 0
    assert sockets.cookie_of(a) == sockets.cookie_of(a) == sockets.inspect(a).cookie
    assert sockets.cookie_of(a) != sockets.cookie_of(b)


def test_what_the_socket_array_would_refuse_is_refused_with_the_reason():
    def info(**kw) -> SocketInfo:
        fields = {"family": socket.AF_INET, "proto": socket.IPPROTO_TCP, "addr": "127.0.0.1", "port": 8080,
                  "cookie": 1, "reuseport": True, "listening": True}
        return SocketInfo(**{**fields, **kw})

    sockets.check_member_socket(info(), "w")
    sockets.check_member_socket(info(proto=socket.IPPROTO_UDP, listening=False), "w")
    for fields, says in [
        ({"reuseport": False}, "w: socket tcp:127.0.0.1:8080 does not have SO_REUSEPORT set"),
        ({"port": 0}, "w: socket is not bound to a port"),
        ({"listening": False}, "w: TCP socket tcp:127.0.0.1:8080 is not listening"),
    ]:
        with pytest.raises(InvalidInput) as refused:
            sockets.check_member_socket(info(**fields), "w")
        assert str(refused.value) == says


def test_inspect_refuses_what_is_neither_tcp_nor_udp():
    a, b = socket.socketpair()
    try:
        with pytest.raises(InvalidInput, match="neither TCP nor UDP"):
            sockets.inspect(a)
    finally:
        a.close()
        b.close()


def test_detach_without_a_program_says_none_was_attached(made):
    assert sockets.detach_program(made("tcp", "127.0.0.1", 0)) is False
    plain = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        plain.bind(("127.0.0.1", 0))
        with pytest.raises(OSError):  # not in a reuseport group at all
            sockets.detach_program(plain)
    finally:
        plain.close()


# Taking a process's socket (here: this process's own) -----------------------------------------------


def test_a_member_socket_taken_from_a_process_is_the_same_socket(made):
    s = made("tcp", "127.0.0.1", 0)
    taken, info = sockets.take_member_socket(os.getpid(), s.fileno(), "register w1", cookie=sockets.cookie_of(s))
    try:
        assert taken.fileno() != s.fileno()
        assert info == sockets.inspect(s)
        assert sockets.cookie_of(taken) == sockets.cookie_of(s)
    finally:
        taken.close()


def test_a_socket_no_longer_the_one_found_is_refused(made):
    s = made("tcp", "127.0.0.1", 0)
    says = f"register w1: fd {s.fileno()} of pid {os.getpid()} is no longer the socket found"
    with pytest.raises(InvalidInput, match=says):
        sockets.take_member_socket(os.getpid(), s.fileno(), "register w1", cookie=sockets.cookie_of(s) + 1)


def test_a_socket_the_array_would_refuse_is_refused_when_taken():
    s = socket.socket()  # bound, listening, no SO_REUSEPORT
    try:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        with pytest.raises(InvalidInput, match=rf"register w1 \(pid {os.getpid()} fd {s.fileno()}\): .* SO_REUSEPORT"):
            sockets.take_member_socket(os.getpid(), s.fileno(), "register w1")
    finally:
        s.close()


def test_taking_what_is_not_a_socket_or_not_there_is_refused():
    pid = os.getpid()
    r, w = os.pipe()
    try:
        with pytest.raises(InvalidInput, match=f"register w1: fd {r} of pid {pid} is not a socket"):
            sockets.take_member_socket(pid, r, "register w1")
    finally:
        os.close(r)
        os.close(w)
    free = 1 << 20  # a number no fd of this process has (a freed low one would be the pidfd's own)
    with pytest.raises(InvalidInput, match=f"register w1: take fd {free} of pid {pid}: the process has no fd {free}"):
        sockets.take_member_socket(pid, free, "register w1")


def test_take_fd_refuses_bad_numbers_and_gone_processes():
    for pid, fd in ((0, 3), (-1, 3), (os.getpid(), -1)):
        with pytest.raises(InvalidInput, match="pid must be > 0 and fd >= 0"):
            sockets.take_fd(pid, fd)
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    with pytest.raises(InvalidInput, match=f"take fd 0 of pid {child.pid}: no such process"):
        sockets.take_fd(child.pid, 0)


def test_process_exists():
    assert sockets.process_exists(os.getpid())
    assert sockets.process_exists(1)  # another user's process exists too (kill says EPERM)
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    assert not sockets.process_exists(child.pid)


# Waking a selectors loop --------------------------------------------------------------------------


def test_self_pipe_wakes_and_drains():
    pipe = sockets.SelfPipe()
    try:
        with pytest.raises(BlockingIOError):
            pipe.reader.recv(1)  # non-blocking, nothing yet
        pipe.writer.send(b"\0" * 3)
        pipe.drain()
        with pytest.raises(BlockingIOError):
            pipe.reader.recv(1)
        pipe.drain()  # nothing waiting: returns
    finally:
        pipe.close()
    assert pipe.reader.fileno() == -1 and pipe.writer.fileno() == -1
