"""A closing listener's queue goes to live members, chosen by the program."""

from __future__ import annotations

import json
import socket

import pytest

pytestmark = pytest.mark.kernel

QUEUED = 150


def _accept_all(sock: socket.socket) -> list[socket.socket]:
    out = []
    while True:
        try:
            conn, _ = sock.accept()
        except BlockingIOError:
            return out
        out.append(conn)


def _connect(clients: list, port: int, prefix: str) -> None:
    """QUEUED clients from distinct sources under `prefix` (e.g. "127.0"), kept in `clients`."""
    for i in range(QUEUED):
        cl = socket.socket()
        cl.settimeout(5)
        clients.append(cl)
        cl.bind((f"{prefix}.{i // 200}.{1 + i % 200}", 0))
        cl.connect(("127.0.0.1", port))


def test_closing_listener_hands_its_queue_to_live_members(netns, rpctl, make_members):
    members = make_members()
    a, b, c = members.add(), members.add(), members.add()
    rpctl.ok(*members.register_args("a", a))
    rpctl.ok(*members.register_args("b", b))
    rpctl.ok(*members.register_args("c", c))
    # Every new connection to a: build up a queue there.
    rpctl.ok("weights", "b=0", "c=0")
    clients = []
    try:
        _connect(clients, members.port, "127.0")
        queue = json.loads(rpctl.ok("status", "--json"))["groups"][0]["members"][0]
        assert queue["name"] == "a" and queue["queue"] == QUEUED

        # b takes new connections; c is draining and must get none of a's queue.
        rpctl.ok("weights", "b=1", "c=1")
        rpctl.ok("drain", "c")
        a.close()

        taken_b, taken_c = _accept_all(b), _accept_all(c)
        assert len(taken_c) == 0, "a draining member took migrated connections"
        assert len(taken_b) == QUEUED, f"{len(taken_b)} of {QUEUED} queued connections survived the close"
        # Every client is still connected: a byte written by the new owner arrives.
        for conn in taken_b:
            conn.sendall(b"!")
        for cl in clients:
            assert cl.recv(1) == b"!"
        for conn in taken_b:
            conn.close()
        state = {m["name"]: m for m in json.loads(rpctl.ok("status", "--json"))["groups"][0]["members"]}
        assert state["a"]["state"] == "gone"
        assert state["b"]["migrated"] == QUEUED
    finally:
        for cl in clients:
            cl.close()


def test_plain_select_loses_a_closing_listeners_queue(netns, rpctl, make_members, monkeypatch):
    """What kernels before 5.14 give (forced here with RPCTL_MIGRATE=0): the
    program is never asked, tcp_migrate_req is 0, and every connection queued
    on a closing listener is reset.  This documents the loss rpctl avoids."""
    monkeypatch.setenv("RPCTL_MIGRATE", "0")
    members = make_members()
    a, b = members.add(), members.add()
    code, out, err = rpctl(*members.register_args("a", a))
    assert code == 0 and "no listener migration" in err, "the user is warned"
    rpctl.ok(*members.register_args("b", b))
    assert json.loads(rpctl.ok("status", "--json"))["groups"][0]["migration"] is False
    rpctl.ok("weights", "b=0")
    with open("/proc/sys/net/ipv4/tcp_migrate_req") as f:
        assert f.read().strip() == "0", "this test documents the kernel's default"
    clients = []
    try:
        _connect(clients, members.port, "127.1")
        rpctl.ok("weights", "b=1")
        a.close()
        assert _accept_all(b) == [], "nothing migrated without SELECT_OR_MIGRATE"
        reset = 0
        for cl in clients:
            try:
                cl.sendall(b"x")
                reset += cl.recv(1) == b""
            except ConnectionResetError:
                reset += 1
        assert reset == QUEUED, f"{reset} of {QUEUED} queued connections were reset"
    finally:
        for cl in clients:
            cl.close()
