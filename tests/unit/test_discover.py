"""rpctl.controller.kernel.discover and .adopt, and the discover/adopt commands, without privileges.

The fdinfo parser is fed text; serving_fds and discover() look at real epolls
and real loopback listeners of this test process and of children it starts
(a process may read its own and its own user's /proc entries and take its
own fds).  adopt's checks run on hand-made endpoints; anything that would
reach bpffs or another user's process fails the test.
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys

import pytest
from rpctl.controller.contract.errors import ExitStatus, InvalidInput, NotFound, PermissionDenied, UsageError
from rpctl.controller.kernel import discover, probe
from rpctl.controller.kernel.discover import Endpoint, EpollTarget, Holder, Listener
from rpctl.controller.ops import adopt
from rpctl.controller.store.options import GroupOptions
from rpctl.controller.tables import naming

from tests.support.cli import invoke

# The text of /proc/PID/fdinfo/<epoll fd> of an nginx worker (kernel 6.18).
NGINX_WORKER_FDINFO = """\
pos:\t0
flags:\t02
mnt_id:\t17
ino:\t18
tfd:       11 events: 80000019 data:     5616ba02c340  pos:0 ino:12 sdev:10
tfd:        5 events:     2019 data:     5616d84e0d60  pos:0 ino:88283f sdev:9
tfd:        8 events:     2019 data:     5616d84e0e50  pos:0 ino:882843 sdev:9
"""


# The fdinfo parser -------------------------------------------------------------------


def test_parse_epoll_fdinfo_of_an_nginx_worker():
    assert discover.parse_epoll_fdinfo(NGINX_WORKER_FDINFO) == [
        EpollTarget(tfd=11, events=0x80000019, ino=0x12),
        EpollTarget(tfd=5, events=0x2019, ino=0x88283F),  # inode 8923199: the worker's listener
        EpollTarget(tfd=8, events=0x2019, ino=0x882843),
    ]


def test_parse_epoll_fdinfo_without_inodes_and_with_noise():
    text = "pos:\t0\nflags:\t02000002\ntfd:        7 events:       19 data:     7\ngarbage\n\ntfd: x\n"
    assert discover.parse_epoll_fdinfo(text) == [EpollTarget(tfd=7, events=0x19, ino=None)]
    assert discover.parse_epoll_fdinfo("") == []
    # The fdinfo of a file that is not an epoll has no tfd lines.
    assert discover.parse_epoll_fdinfo("pos:\t0\nflags:\t0100002\nmnt_id:\t15\nino:\t1234\n") == []


# serving_fds on this process ------------------------------------------------------------


def test_serving_fds_lists_what_our_own_epolls_watch():
    a, b = socket.socketpair()
    r, w = os.pipe()
    ep1, ep2 = select.epoll(), select.epoll()
    try:
        before = discover.serving_fds(os.getpid())
        assert a.fileno() not in before and r not in before
        ep1.register(a.fileno(), select.EPOLLIN)
        ep2.register(r, select.EPOLLIN)
        now = discover.serving_fds(os.getpid())
        assert {a.fileno(), r} <= now
        assert b.fileno() not in now and w not in now
        targets = {t.tfd: t for t in discover.epoll_targets(os.getpid())}
        assert targets[a.fileno()].ino == os.fstat(a.fileno()).st_ino
        assert targets[r].ino == os.fstat(r).st_ino
        ep1.unregister(a.fileno())
        ep2.close()
        after = discover.serving_fds(os.getpid())
        assert a.fileno() not in after and r not in after
    finally:
        ep1.close()
        ep2.close()
        a.close()
        b.close()
        os.close(r)
        os.close(w)


def test_serving_fds_of_a_process_that_is_gone_is_empty():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert discover.serving_fds(proc.pid) == set()
    assert discover.epoll_targets(proc.pid) == []


# discover() on real sockets --------------------------------------------------------------


def _listener(reuseport: bool, port: int = 0, kind=socket.SOCK_STREAM, reuseaddr: bool = False):
    s = socket.socket(socket.AF_INET, kind)
    if reuseport:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if reuseaddr:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    if kind == socket.SOCK_STREAM:
        s.listen(8)
    return s


def test_discover_a_listener_held_by_this_process_alone():
    for reuseport in (True, False):
        s = _listener(reuseport)
        try:
            port = s.getsockname()[1]
            (ep,) = discover.discover(port=port)
            assert (ep.proto, ep.addr, ep.port, ep.family) == ("tcp", "127.0.0.1", port, socket.AF_INET)
            assert ep.name == f"tcp:127.0.0.1:{port}"
            (lst,) = ep.listeners
            assert lst.inode == os.fstat(s.fileno()).st_ino
            assert lst.holders == [Holder(os.getpid(), s.fileno(), lst.holders[0].comm)]
            # One process holds it: it is the server, epoll or not.
            assert lst.server == lst.holders[0] and lst.epolled_by == []
            # A single socket: SO_REUSEPORT is read from the socket itself.
            assert ep.reuseport is reuseport
            assert lst.queue == 0 and lst.backlog == 8
        finally:
            s.close()


def test_discover_udp_sockets_sharing_a_port_through_reuseaddr_alone():
    a = _listener(False, kind=socket.SOCK_DGRAM, reuseaddr=True)
    b = _listener(False, port=a.getsockname()[1], kind=socket.SOCK_DGRAM, reuseaddr=True)
    try:
        (ep,) = discover.discover(port=a.getsockname()[1], proto="udp")
        assert len(ep.listeners) == 2
        assert ep.reuseport is False, "two UDP sockets on one port are not necessarily a reuseport group"
        assert all(lst.backlog is None for lst in ep.listeners)
    finally:
        a.close()
        b.close()


def test_two_tcp_listeners_on_one_port_are_a_reuseport_group_without_taking_them(monkeypatch):
    a = _listener(True)
    b = _listener(True, port=a.getsockname()[1])
    try:

        def refuse(*a, **kw):
            raise AssertionError("no socket needs taking")

        monkeypatch.setattr(discover.sockets, "take_socket", refuse)
        (ep,) = discover.discover(port=a.getsockname()[1])
        assert ep.reuseport is True and len(ep.listeners) == 2
        assert discover.discover(port=a.getsockname()[1], proto="udp") == []
    finally:
        a.close()
        b.close()


_CHILD = """
import select, sys, time
ep = select.epoll()
for fd in sys.argv[1:]:
    ep.register(int(fd), select.EPOLLIN)
print("ready", flush=True)
time.sleep(60)
"""


@pytest.fixture
def children():
    procs = []

    def start(fds_to_poll: list[int], pass_fds: tuple[int, ...]) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD, *map(str, fds_to_poll)],
            pass_fds=pass_fds,
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        assert proc.stdout.readline().strip() == "ready"
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def test_discover_tells_the_server_apart_like_an_nginx_master_and_workers(children):
    """This process plays nginx's master: it holds every listener, its children all inherit
    them all, each child epolls one; a third socket no one epolls has no server."""
    a = _listener(True)
    port = a.getsockname()[1]
    b, c = _listener(True, port), _listener(True, port)
    try:
        fds = (a.fileno(), b.fileno(), c.fileno())
        w1 = children([a.fileno()], fds)
        w2 = children([b.fileno()], fds)
        (ep,) = discover.discover(port=port)
        by_inode = {lst.inode: lst for lst in ep.listeners}
        everyone = sorted([os.getpid(), w1.pid, w2.pid])
        for sock, worker in ((a, w1), (b, w2), (c, None)):
            lst = by_inode[os.fstat(sock.fileno()).st_ino]
            assert lst.holder_pids == everyone
            assert {h.fd for h in lst.holders} == {sock.fileno()}
            if worker is None:
                assert lst.server is None and lst.epolled_by == []
            else:
                assert lst.server == Holder(worker.pid, sock.fileno(), lst.server.comm)
                assert lst.epolled_by == [worker.pid]
        assert [lst.server.pid for lst in ep.listeners if lst.server] == sorted([w1.pid, w2.pid])
        assert ep.listeners[-1].server is None, "listeners without a server come last"
        with pytest.raises(
            InvalidInput, match=rf"pids {','.join(map(str, everyone))} hold it and none of them"
        ):
            adopt.plan(ep, "{comm}-{pid}", {}, "tcp-1")
    finally:
        for s in (a, b, c):
            s.close()


def test_discover_checks_its_arguments():
    with pytest.raises(InvalidInput, match="port 0"):
        discover.discover(port=0)
    with pytest.raises(InvalidInput, match="sctp"):
        discover.discover(proto="sctp")


# Names and plans ---------------------------------------------------------------------------------


def test_format_name():
    assert adopt.format_name("{comm}-{pid}", "nginx", 42, 5, 1) == "nginx-42"
    assert adopt.format_name("w{i}-fd{fd}", "x", 42, 5, 3) == "w3-fd5"
    assert adopt.format_name("{comm}", "my server=1", 1, 1, 1) == "my_server_1"
    assert adopt.format_name("{pid:06d}", "x", 42, 5, 1) == "000042"
    with pytest.raises(InvalidInput, match=r"unknown field \{port\}"):
        adopt.format_name("{comm}-{port}", "x", 1, 1, 1)
    with pytest.raises(InvalidInput, match=r"unknown field \{\}"):
        adopt.format_name("w-{}", "x", 1, 1, 1)
    with pytest.raises(InvalidInput, match="name format"):
        adopt.format_name("w-{pid", "x", 1, 1, 1)
    with pytest.raises(InvalidInput, match="name format"):
        adopt.format_name("{comm:d}", "x", 1, 1, 1)
    with pytest.raises(InvalidInput, match="member name"):
        adopt.format_name("x" * 100 + "{i}", "x", 1, 1, 1)
    with pytest.raises(InvalidInput, match="member name"):
        adopt.format_name(" {i}", "x", 1, 1, 1)


def _ep(*listeners: Listener, proto: str = "tcp", addr: str = "127.0.0.1", port: int = 8080) -> Endpoint:
    return Endpoint(proto, socket.AF_INET, addr, port, list(listeners), True)


def _lst(cookie: int, *holders: tuple[int, int], server: int | None = None, polled: tuple = ()) -> Listener:
    hs = [Holder(pid, fd, "srv") for pid, fd in holders]
    srv = next((h for h in hs if h.pid == server), None)
    return Listener(cookie, cookie + 1000, 0, 0, 128, hs, list(polled), srv)


def test_plan_names_members_and_skips_those_already_in():
    ep = _ep(
        _lst(1, (10, 5), (11, 5), server=11, polled=(11,)), _lst(2, (10, 6), (12, 6), server=12, polled=(12,))
    )
    todo, skipped = adopt.plan(ep, "{comm}-{pid}", {}, "tcp-8080")
    assert [(p.name, p.holder.pid, p.holder.fd) for p in todo] == [("srv-11", 11, 5), ("srv-12", 12, 6)]
    assert skipped == []
    todo, skipped = adopt.plan(ep, "w{i}", {2: ("web-b", 4)}, "tcp-8080")
    assert [p.name for p in todo] == ["w1"]
    assert [(r.name, r.status, r.index, r.pid, r.endpoint) for r in skipped] == [
        ("web-b", "already a member", 4, 12, "tcp:127.0.0.1:8080")
    ]


def test_plan_names_one_process_with_several_listeners_by_the_default_format():
    one_process = _ep(_lst(1, (10, 5), server=10), _lst(2, (10, 6), server=10), _lst(3, (10, 7), server=10))
    todo, _ = adopt.plan(one_process, naming.DEFAULT_FORMAT, {}, "g")
    assert [p.name for p in todo] == ["srv-1", "srv-2", "srv-3"]
    # Numbers members have are taken: a listener that joins later gets the lowest free one.
    todo, skipped = adopt.plan(one_process, naming.DEFAULT_FORMAT, {1: ("srv-1", 0), 3: ("srv-3", 2)}, "g")
    assert [p.name for p in todo] == ["srv-2"] and [r.name for r in skipped] == ["srv-1", "srv-3"]


def test_plan_refuses_what_it_cannot_tell_apart():
    several = _ep(_lst(1, (10, 5), (11, 5), (12, 5), polled=(11, 12)))
    with pytest.raises(
        InvalidInput, match=r"pids 10,11,12 hold it and the epolls of pids 11,12 all watch it"
    ):
        adopt.plan(several, "{comm}-{pid}", {}, "g")
    nobody = _ep(_lst(1))
    with pytest.raises(InvalidInput, match="no process visible here holds socket cookie 1"):
        adopt.plan(nobody, "{comm}-{pid}", {}, "g")
    # ...unless the socket is a member already: then it is skipped.
    assert adopt.plan(several, "{comm}-{pid}", {1: ("x", 0)}, "g")[0] == []


def test_plan_refuses_colliding_names():
    one_process_two_sockets = _ep(_lst(1, (10, 5), server=10), _lst(2, (10, 6), server=10))
    with pytest.raises(
        InvalidInput, match=r"'srv-10' would be given to pid 10 fd 5 and to pid 10 fd 6: add \{fd\}"
    ):
        adopt.plan(one_process_two_sockets, "{comm}-{pid}", {}, "g")
    assert [p.name for p in adopt.plan(one_process_two_sockets, "{comm}-{fd}", {}, "g")[0]] == [
        "srv-5",
        "srv-6",
    ]
    ep = _ep(_lst(1, (10, 5), server=10))
    with pytest.raises(InvalidInput, match="group 'g' already has a member 'srv-10'"):
        adopt.plan(ep, "{comm}-{pid}", {99: ("srv-10", 0)}, "g")
    # A member whose socket is gone still holds its name.
    with pytest.raises(InvalidInput, match="already has a member 'srv-10'"):
        adopt.plan(ep, "{comm}-{pid}", {}, "g", names_in_use={"srv-10": 99})


def test_pick_endpoint():
    tcp, udp = _ep(proto="tcp"), _ep(proto="udp")
    other = _ep(addr="::1")
    assert adopt.pick_endpoint([tcp], 8080, None, None) is tcp
    with pytest.raises(NotFound, match="no TCP or UDP socket listens on port 8080"):
        adopt.pick_endpoint([], 8080, None, None)
    with pytest.raises(NotFound, match="no UDP socket listens on port 8080 on 10.0.0.1"):
        adopt.pick_endpoint([tcp], 8080, "udp", "10.0.0.1")
    with pytest.raises(
        UsageError, match=r"several endpoints use it \(tcp:127.0.0.1:8080, udp:127.0.0.1:8080\)"
    ):
        adopt.pick_endpoint([tcp, udp], 8080, None, None)
    assert adopt.pick_endpoint([tcp, other], 8080, None, "0:0::1") is other
    with pytest.raises(InvalidInput, match="not an IP address"):
        adopt.pick_endpoint([tcp], 8080, None, "localhost")


# adopt's checks that come before anything is read or changed ----------------------------------


@pytest.fixture
def nothing_read(monkeypatch):
    def refuse(*a, **kw):
        raise AssertionError("adopt went past its first checks")

    monkeypatch.setattr(discover, "discover", refuse)
    monkeypatch.setattr(discover.sockets, "take_socket", refuse)
    monkeypatch.setattr(adopt, "register_all", refuse)


def test_adopt_without_cap_sys_ptrace_is_refused_first(monkeypatch, nothing_read):
    monkeypatch.setattr(probe, "effective_caps", lambda: 0)
    with pytest.raises(PermissionDenied, match="adopt port 8080: .*CAP_SYS_PTRACE"):
        adopt.adopt(8080)


def test_adopt_refuses_bad_arguments_before_anything(nothing_read):
    with pytest.raises(InvalidInput, match="unknown field"):
        adopt.adopt(8080, name_format="{name}")
    with pytest.raises(InvalidInput, match="port 70000"):
        adopt.adopt(70000)
    with pytest.raises(InvalidInput, match="protocol"):
        adopt.adopt(8080, proto="sctp")


# The commands --------------------------------------------------------------------------------------


def _fake_endpoints() -> list[Endpoint]:
    served = _lst(7, (10, 5), (11, 5), server=11, polled=(11,))
    served.holders = [Holder(10, 5, "nginx"), Holder(11, 5, "nginx")]
    served.server = served.holders[1]
    unserved = _lst(8, (10, 6), (12, 6))
    return [_ep(served, unserved, port=7080)]


def test_discover_json_keys_are_stable(cli_without_system, monkeypatch):
    seen = {}

    def fake(port=None, proto=None):
        seen.update(port=port, proto=proto)
        return _fake_endpoints()

    monkeypatch.setattr(discover, "discover", fake)
    code, out, err = invoke(["discover", "--port", 7080, "--json"])
    assert (code, err) == (0, "")
    assert seen == {"port": 7080, "proto": None}
    doc = json.loads(out)
    (ep,) = doc["endpoints"]
    assert list(ep) == ["endpoint", "protocol", "family", "address", "port", "reuseport", "listeners"]
    assert (ep["endpoint"], ep["family"], ep["reuseport"]) == ("tcp:127.0.0.1:7080", "ipv4", True)
    served, unserved = ep["listeners"]
    assert list(served) == ["cookie", "inode", "queue", "backlog", "server", "epolled_by", "holders"]
    assert served["server"] == {"pid": 11, "fd": 5, "comm": "nginx"}
    assert served["epolled_by"] == [11]
    assert served["holders"] == [{"pid": 10, "fd": 5, "comm": "nginx"}, {"pid": 11, "fd": 5, "comm": "nginx"}]
    assert unserved["server"] is None and unserved["epolled_by"] == []


def test_discover_table(cli_without_system, monkeypatch):
    monkeypatch.setattr(discover, "discover", lambda port=None, proto=None: _fake_endpoints())
    code, out, err = invoke(["discover"])
    assert code == 0, err
    assert "tcp:127.0.0.1:7080  reuseport yes  2 sockets" in out
    assert "11 nginx" in out and "10, 11 (fd 5)" in out and "? none epolls it" in out
    monkeypatch.setattr(discover, "discover", lambda port=None, proto=None: [])
    assert (
        invoke(["discover", "--port", 9])[1]
        == "no listening TCP or bound UDP socket on port 9 in this network namespace\n"
    )


def test_adopt_command_output_and_arguments(cli_without_system, monkeypatch):
    seen = {}
    R = adopt.AdoptResult

    def fake(port, **kw):
        seen.update(kw, port=port)
        return [
            R("nginx-11", 11, 5, "nginx", 7, "registered", "tcp-7080", 0, "tcp:127.0.0.1:7080", created=True),
            R("old", 12, 6, "nginx", 8, "already a member", "tcp-7080", 3, "tcp:127.0.0.1:7080"),
        ]

    monkeypatch.setattr(adopt, "adopt", fake)
    code, out, err = invoke(["adopt", "--port", 7080, "-g", "tcp-7080", "--name-format", "n{i}", "--proto", "tcp"])
    assert code == 0, err
    assert seen == {"port": 7080, "group": "tcp-7080", "name_format": "n{i}", "proto": "tcp", "addr": None,
                    "options": GroupOptions()}
    assert out.splitlines() == [
        "registered nginx-11 (pid 11 nginx fd 5) in group tcp-7080 at index 0",
        "old (pid 12 nginx fd 6): already a member of group tcp-7080",
        "adopted 1 listener of tcp:127.0.0.1:7080 into group tcp-7080 (created it); the program steers them",
    ]


@pytest.mark.parametrize(
    "error, status",
    [
        (NotFound("adopt port 7080: no TCP or UDP socket listens on port 7080"), ExitStatus.NOT_FOUND),
        (
            InvalidInput("adopt tcp:127.0.0.1:7080: x: socket does not have SO_REUSEPORT set"),
            ExitStatus.INVALID,
        ),
        (PermissionDenied("adopt port 7080: needs CAP_SYS_PTRACE"), ExitStatus.PERMISSION),
    ],
)
def test_adopt_refusals_are_one_line_and_an_exit_code(cli_without_system, monkeypatch, error, status):
    def fake(port, **kw):
        raise error

    monkeypatch.setattr(adopt, "adopt", fake)
    code, out, err = invoke(["adopt", "--port", 7080])
    assert (code, out) == (status, "")
    assert err == f"rpctl: {error}\n"


def test_command_lines_refused_by_the_parser(cli_without_system):
    for argv in (
        ["adopt"],
        ["adopt", "--port", "0"],
        ["adopt", "--port", "x"],
        ["discover", "--proto", "sctp"],
    ):
        code, out, err = invoke(argv)
        assert code == ExitStatus.USAGE, argv
        assert len(err.splitlines()) == 1
    code, out, _ = invoke(["adopt", "--help"])
    assert code == 0 and "rpctl adopt --port 8080" in out and "{comm}" in out
    code, out, _ = invoke(["discover", "--help"])
    assert code == 0 and "rpctl discover --port 8080 --json" in out
