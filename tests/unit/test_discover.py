"""controller/kernel/discover.py: fdinfo parsing, serving_fds and discover(), without privileges.

The fdinfo parser is fed text; serving_fds and discover() look at real epolls
and real loopback listeners of this test process and of children it starts
(a process may read its own and its own user's /proc entries and take its
own fds).
"""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import time

import pytest
from hypothesis import given
from rpctl.controller.contract.errors import InvalidInput
from rpctl.controller.kernel import discover
from rpctl.controller.kernel.discover import EpollTarget, Holder
from rpctl.controller.ops import adopt

from tests.support import hostile

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


def test_parse_syscall_of_a_thread_blocked_in_accept_and_of_others():
    # /proc/PID/task/TID/syscall of a thread in accept4(3, ...) on x86_64, and of running ones.
    assert discover.parse_syscall("288 0x3 0x7ffc2a1b 0x7ffc2a1c 0x80000 0x0 0x0 0x7ffc2a00 0x7f00\n") == (288, 3)
    assert discover.parse_syscall("running\n") is None
    assert discover.parse_syscall("-1 0x7ffc2a00 0x7f00\n") is None
    assert discover.parse_syscall("") is None


def test_children_sharing_a_listener_are_its_servers_and_the_parent_that_holds_it_is_not():
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen()
    kids = []
    try:
        for _ in range(2):
            pid = os.fork()
            if pid == 0:
                try:
                    lst.accept()
                finally:
                    os._exit(0)
            kids.append(pid)
        port = lst.getsockname()[1]

        def servers():
            found = discover.discover(port, "tcp")[0].listeners[0]
            return sorted(h.pid for h in found.servers), found

        deadline = time.monotonic() + 5
        while servers()[0] != sorted(kids) and time.monotonic() < deadline:
            time.sleep(0.02)
        pids, found = servers()
        assert pids == sorted(kids) and os.getpid() not in pids
        assert found.server.pid == min(kids) and not found.weak
        assert sorted(h.pid for h in discover.servers_of([found.inode])[found.inode]) == sorted(kids)
    finally:
        for pid in kids:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        lst.close()


# Hostile /proc text: what any process may make of its name, status, cgroup and fdinfo ------------

STATUS = "Name:\thead\nUmask:\t0022\nState:\tR (running)\nPid:\t28469\nPPid:\t28466\nUid:\t0\t33\t0\t0\nGid:\t0\t0\t0\t0\n"
CGROUP = "9:name=systemd:/\n4:memory:/process_api/89cd\n1:cpu:/\n0::/system.slice/nginx.service\n"
SYSCALL = "288 0x3 0x7ffc2a1b 0x7ffc2a1c 0x80000 0x0 0x0 0x7ffc2a00 0x7f00\n"


def test_status_and_cgroup_give_the_effective_uid_and_the_v2_path():
    assert discover.uid_of_status(STATUS) == 33 and discover.uid_of_status("Uid:\t0\n") is None
    assert discover.cgroup_of(CGROUP) == "/system.slice/nginx.service" and discover.cgroup_of("1:cpu:/\n") is None


@given(hostile.proc_text(NGINX_WORKER_FDINFO))
def test_any_fdinfo_text_gives_watched_files(text):
    for t in discover.parse_epoll_fdinfo(text):
        assert isinstance(t.tfd, int) and t.events >= 0 and (t.ino is None or t.ino >= 0)


@given(hostile.proc_text(SYSCALL, "running\n"))
def test_any_syscall_text_gives_a_call_or_none(text):
    call = discover.parse_syscall(text)
    assert call is None or (call[0] >= 0 and isinstance(call[1], int))


@given(hostile.proc_text(STATUS), hostile.proc_text(CGROUP))
def test_any_status_and_cgroup_text_give_a_uid_and_a_path_or_none(status, cgroup):
    uid, path = discover.uid_of_status(status), discover.cgroup_of(cgroup)
    assert uid is None or uid >= 0
    assert path is None or "\n" not in path


def test_a_process_whose_name_is_not_utf8_is_named_and_matched(own_name):
    """Any process may name itself (prctl PR_SET_NAME) with bytes that are not UTF-8: discover
    shows it with U+FFFD where its bytes do not decode, and reads the rest of it."""
    own_name(b"\xff\xfeworker")
    who = discover.identity(os.getpid())
    assert who.comm == "\ufffd\ufffdworker" and who.uid == os.geteuid()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        inode = os.fstat(s.fileno()).st_ino
        assert [h.comm for h in discover.holders_of([inode])[inode]] == ["\ufffd\ufffdworker"]
