"""`rpctl discover` and `rpctl adopt` against a real nginx, and the refusals that must change nothing.

nginx with `listen ... reuseport` and 3 workers opens 3 listeners in its
master and forks: master and workers all hold all 3 (same fd numbers), and
each worker adds only its own listener to its epoll.  discover must name a
worker, never the master, as each socket's server; adopt registers those;
a drained worker then answers nothing while the others answer everything.
Each reply body is "$pid\\n": the pid of the worker that accepted it.
"""

from __future__ import annotations

import json
import os
import socket

import pytest
from rpctl.cli.demo import loadgen
from rpctl.cli.demo import worker as demo_worker
from rpctl.controller.kernel import discover
from rpctl.controller.store.state import Layout

pytestmark = pytest.mark.kernel

PORT = 7080
WORKERS = 3


@pytest.fixture
def workers():
    procs = []

    def start(name: str, port: int, proto: str = "tcp"):
        proc, ready = demo_worker.spawn(name, f"127.0.0.1:{port}", proto=proto)
        procs.append(proc)
        return proc, ready

    yield start
    for proc in procs:
        demo_worker.stop(proc, timeout=1)


def _status(rpctl) -> list[dict]:
    return json.loads(rpctl.ok("status", "--json"))["groups"]


def _one_error(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("rpctl: "), err
    return lines[0]


def _trace_publishes_and_attaches(monkeypatch) -> list[tuple]:
    """Every publish (with the names of the members whose policy it sets) and every attach, in order."""
    from rpctl.controller.store.generation import Group

    calls = []
    real_publish, real_attach = Group.publish, Group.attach

    def publish(self, policies, members, pin=None):
        calls.append(("publish", sorted(members[i].name.decode() for i, pol in policies.items() if pol)))
        return real_publish(self, policies, members, pin)

    def attach(self, sock):
        calls.append(("attach",))
        return real_attach(self, sock)

    monkeypatch.setattr(Group, "publish", publish)
    monkeypatch.setattr(Group, "attach", attach)
    return calls


def test_nginx_discover_adopt_drain(netns, rpctl, nginx, monkeypatch):
    ngx = nginx(port=PORT, workers=WORKERS)
    calls = _trace_publishes_and_attaches(monkeypatch)
    (ep,) = json.loads(rpctl.ok("discover", "--port", PORT, "--json"))["endpoints"]
    assert (ep["protocol"], ep["address"], ep["port"], ep["reuseport"]) == ("tcp", "127.0.0.1", PORT, True)
    assert len(ep["listeners"]) == WORKERS
    servers = [lst["server"] for lst in ep["listeners"]]
    assert {s["pid"] for s in servers} == ngx.worker_pids, "each worker serves exactly one listener"
    for lst in ep["listeners"]:
        holders = {h["pid"] for h in lst["holders"]}
        # The master holds every listener and serves none: only the epolls tell.
        assert holders == ngx.worker_pids | {ngx.master}
        assert lst["epolled_by"] == [lst["server"]["pid"]]
        assert lst["server"]["comm"] == "nginx"
    print("discover:", json.dumps(ep))

    out = rpctl.ok("adopt", "--port", PORT)
    print(out)
    # Every listener is a member before the program decides anything: no worker takes it all meanwhile.
    # One publish makes them all live, then the program is attached.
    # Named {comm}-{i}, in the order discover lists them (by serving pid).
    names = [f"nginx-{i}" for i in range(1, WORKERS + 1)]
    assert calls == [("publish", names), ("attach",)]
    (group,) = _status(rpctl)
    members = {m["name"]: m for m in group["members"]}
    assert {name: members[name]["pid"] for name in names} == {n: s["pid"] for n, s in zip(names, servers)}
    assert {(m["pid"], m["fd"]) for m in members.values()} == {(s["pid"], s["fd"]) for s in servers}
    assert {m["cookie"] for m in members.values()} == {lst["cookie"] for lst in ep["listeners"]}

    again = rpctl.ok("adopt", "--port", PORT)
    assert again.count("): already a member") == WORKERS and "nothing to do" in again, again
    (after,) = _status(rpctl)
    assert _same_members(after, group), "adopting again must change nothing"

    drained = min(ngx.worker_pids)
    rpctl.ok("drain", "nginx-1")
    tally = loadgen.run_tcp("127.0.0.1", PORT, count=2000, concurrency=8)
    assert sum(tally.failures.values()) == 0, f"failed requests: {dict(tally.failures)}"
    assert tally.total_ok() == 2000
    assert tally.by_name[str(drained)] == 0, dict(tally.by_name)
    assert set(tally.by_name) == {str(p) for p in ngx.worker_pids - {drained}}, dict(tally.by_name)
    print(f"after draining nginx-1 (pid {drained}): replies by worker pid {dict(tally.by_name)}")


def _same_members(a: dict, b: dict) -> bool:
    keys = ("name", "index", "pid", "fd", "cookie", "weight", "state")
    return (a["generation"], a["published_ns"]) == (b["generation"], b["published_ns"]) and [
        {k: m[k] for k in keys} for m in a["members"]
    ] == [{k: m[k] for k in keys} for m in b["members"]]


def test_adopt_refuses_a_port_nobody_listens_on(netns, rpctl):
    code, out, err = rpctl("adopt", "--port", 7999)
    assert code == 3, (code, out, err)
    assert "no TCP or UDP socket listens on port 7999" in _one_error(err)
    assert Layout().groups() == []


def test_adopt_refuses_a_listener_without_reuseport(netns, rpctl):
    plain = socket.socket()
    try:
        plain.bind(("127.0.0.1", 7081))
        plain.listen(16)
        (ep,) = json.loads(rpctl.ok("discover", "--port", 7081, "--json"))["endpoints"]
        assert ep["reuseport"] is False
        assert ep["listeners"][0]["server"]["pid"] == os.getpid()
        code, out, err = rpctl("adopt", "--port", 7081)
        assert code == 4, (code, out, err)
        assert "does not have SO_REUSEPORT set" in _one_error(err)
        assert Layout().groups() == []
    finally:
        plain.close()


@pytest.mark.parametrize("when", ["after-discovery", "during-registration"])
def test_adopt_refuses_a_process_that_went_away(netns, rpctl, workers, monkeypatch, when):
    """A worker killed after adopt's discovery, or after the first member's socket was taken
    for the registration: exit 4 naming the pid, and no group is left behind.

    (Killed before adopt runs, its only listener closes with it and adopt just sees one
    listener fewer: the race needs adopt to be running.)
    """
    from rpctl.controller.kernel import sockets

    port = 7082
    procs = dict(workers(name, port) for name in ("a", "b"))
    ready = {proc.pid: r for proc, r in procs.items()}
    assert len(ready) == 2
    victim = {}

    def kill(pid: int) -> None:
        proc = next(p for p in procs if p.pid == pid)
        proc.kill()
        proc.wait()
        victim["pid"] = pid

    if when == "after-discovery":
        real = discover.discover

        def racing_discover(*a, **kw):
            found = real(*a, **kw)
            kill(found[0].listeners[-1].server.pid)
            return found

        monkeypatch.setattr(discover, "discover", racing_discover)
    else:
        real_take = sockets.take_member_socket

        def racing_take(pid, fd, *a, **kw):
            taken = real_take(pid, fd, *a, **kw)
            if not victim:
                kill(next(p for p in ready if p != pid))
            return taken

        monkeypatch.setattr(sockets, "take_member_socket", racing_take)

    code, out, err = rpctl("adopt", "--port", port, "--name-format", "w-{pid}")
    assert code == 4, (code, out, err)
    line = _one_error(err)
    assert f"pid {victim['pid']}" in line and "no such process" in line, line
    assert Layout().groups() == [], "state must be as before adopt"
    assert _status(rpctl) == []
    print(f"{when}: {line}")


def test_adopting_listeners_is_one_publish_all_or_nothing(netns, rpctl, workers, monkeypatch):
    """Two more listeners adopted into a group: one refused while they are written leaves the
    group as it was (no generation published, no entry or socket left behind); adopted again,
    both become members in one publish."""
    from rpctl.controller.contract import abi
    from rpctl.controller.contract.errors import InvalidInput
    from rpctl.controller.store import membership
    from rpctl.controller.store.generation import Group

    port = 7084
    for name in ("a", "b"):
        workers(name, port)
    rpctl.ok("adopt", "--port", port, "--name-format", "w{i}")
    (before,) = _status(rpctl)

    def array_and_entries() -> tuple:
        with Group.open(before["name"], Layout()) as g:
            return ([g.socket_cookie(i) for i in range(abi.RP_MAX_MEMBERS)],
                    [bytes(m) for m in g.members()], bytes(g.ctl()))

    kept = array_and_entries()
    for name in ("c", "d"):
        workers(name, port)
    real_entry, written = membership.entry, []

    def refused_second(previous, seat, now_ns):
        written.append(seat.joining.member.name)
        if len(written) == 2:
            raise InvalidInput(f"{seat.joining.member.name}: refused for the test")
        return real_entry(previous, seat, now_ns)

    monkeypatch.setattr(membership, "entry", refused_second)
    calls = _trace_publishes_and_attaches(monkeypatch)
    code, out, err = rpctl("adopt", "--port", port, "--name-format", "w{i}")
    assert code == 4 and "w4: refused for the test" in _one_error(err), (code, out, err)
    assert written == ["w3", "w4"] and calls == [], "the first was written, and undone: nothing published"
    (after,) = _status(rpctl)
    assert _same_members(after, before)
    assert array_and_entries() == kept, "no socket, entry or ctl change is left behind"

    monkeypatch.setattr(membership, "entry", real_entry)
    rpctl.ok("adopt", "--port", port, "--name-format", "w{i}")
    assert calls == [("publish", ["w3", "w4"]), ("attach",)]
    (grown,) = _status(rpctl)
    assert sorted(m["name"] for m in grown["members"]) == ["w1", "w2", "w3", "w4"]
    assert grown["published_ns"] > before["published_ns"]


def test_adopt_asks_which_when_tcp_and_udp_share_the_port(netns, rpctl, workers):
    port = 7083
    for name in ("t1", "t2"):
        workers(name, port)
    udp_names = {workers(name, port, proto="udp")[1].pid: name for name in ("u1", "u2")}
    eps = json.loads(rpctl.ok("discover", "--port", port, "--json"))["endpoints"]
    assert [(e["protocol"], len(e["listeners"]), e["reuseport"]) for e in eps] == [
        ("tcp", 2, True),
        ("udp", 2, True),
    ]

    code, out, err = rpctl("adopt", "--port", port)
    assert code == 2, (code, out, err)
    line = _one_error(err)
    assert f"tcp:127.0.0.1:{port}, udp:127.0.0.1:{port}" in line and "--proto" in line, line
    assert Layout().groups() == []

    rpctl.ok("adopt", "--port", port, "--proto", "udp", "--name-format", "udp-{i}")
    rpctl.ok("adopt", "--port", port, "--proto", "tcp", "--name-format", "tcp-{i}")
    groups = {g["name"]: sorted(m["name"] for m in g["members"]) for g in _status(rpctl)}
    assert groups == {f"udp-{port}": ["udp-1", "udp-2"], f"tcp-{port}": ["tcp-1", "tcp-2"]}
    rpctl.ok("drain", "udp-1", "--group", f"udp-{port}")
    tally = loadgen.run_udp("127.0.0.1", port, count=300)
    assert sum(tally.failures.values()) == 0 and tally.total_ok() == 300, tally.to_dict()
    (udp_group,) = [g for g in _status(rpctl) if g["protocol"] == "udp"]
    drained = next(udp_names[m["pid"]] for m in udp_group["members"] if m["name"] == "udp-1")
    assert set(tally.by_name) == set(udp_names.values()) - {drained}, dict(tally.by_name)


_ONE_PROCESS_THREE_LISTENERS = """
import socket, sys, time
socks = []
for _ in range(3):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", int(sys.argv[1])))
    s.listen(64)
    socks.append(s)
print("ready", flush=True)
time.sleep(600)
"""


def test_adopt_names_the_listeners_of_one_process_without_a_name_format(netns, rpctl):
    """A server with one listener per thread: the default {comm}-{i} gives each its own name."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", _ONE_PROCESS_THREE_LISTENERS, str(PORT)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        out = rpctl.ok("adopt", "--port", PORT)
        (group,) = _status(rpctl)
        comm = discover.identity(proc.pid).comm
        assert sorted(m["name"] for m in group["members"]) == [f"{comm}-{i}" for i in (1, 2, 3)], out
        assert {m["pid"] for m in group["members"]} == {proc.pid}
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
