"""Zero-loss restarts on the real kernel: `rpctl restart` and `rpctl rollout`
while clients open connections continuously.

Every connection the load generator opens must get its reply: a refused,
reset or timed-out connection, or one closed without an answer, counts as
failed (loadgen.Tally.failures).
"""

from __future__ import annotations

import collections
import os
import signal
import socket
import sys

import pytest
from rpctl.cli.demo import loadgen
from rpctl.cli.demo import worker as demo_worker
from rpctl.controller.kernel import diag

from tests.support.launched import alive, members, wait_until
from tests.support.traffic import ClientLoad

pytestmark = pytest.mark.kernel

PORT = 7120
CONCURRENCY = 8
NAMES = {f"worker-{i}" for i in range(1, 5)}
WORKER = [sys.executable, "-m", "rpctl.cli.demo.worker", "--name", "$RPCTL_MEMBER"]


def _assert_no_loss(tally: loadgen.Tally, at_least: int) -> None:
    assert tally.total_ok() >= at_least, tally.to_dict()
    assert sum(tally.failures.values()) == 0, tally.to_dict()
    assert tally.sent == tally.total_ok(), tally.to_dict()


def test_rollout_of_four_launched_members_under_load_loses_nothing(launch, rpctl):
    r = launch(["--group", "web", "-n", 4, "--listen", f"127.0.0.1:{PORT}"], WORKER)
    before = {n: m["pid"] for n, m in r.wait_members(rpctl, NAMES).items()}
    with ClientLoad(PORT, CONCURRENCY) as load:
        wait_until("load to flow", lambda: sum(members(rpctl)[n]["selected"] for n in NAMES) > 300)
        out = rpctl.ok("rollout", "--group", "web")
    after = {n: m["pid"] for n, m in r.wait_members(rpctl, NAMES).items()}

    for name in NAMES:
        assert f"restarted {name}: pid {before[name]} -> {after[name]}" in out, out
        assert after[name] != before[name]
        assert not alive(before[name])
    assert all(m["state"] == "active" for m in members(rpctl).values())
    tally = load.tally
    print(f"\nrollout of 4 under load: {tally.to_dict()}")
    _assert_no_loss(tally, 1000)
    # Every replacement serves: the group is back to four members sharing.
    again = loadgen.run_tcp("127.0.0.1", PORT, count=1200, concurrency=CONCURRENCY)
    assert set(again.by_name) == NAMES, again.to_dict()
    assert sum(again.failures.values()) == 0, again.to_dict()


def test_rollout_in_batches_of_two_and_refusals(launch, rpctl):
    r = launch(["--group", "web", "-n", 4, "--listen", f"127.0.0.1:{PORT}"], WORKER)
    before = {n: m["pid"] for n, m in r.wait_members(rpctl, NAMES).items()}

    # Draining all four at once would leave no one to serve: refused, nothing touched.
    code, out, err = rpctl("rollout", "--group", "web", "--batch", "4")
    assert code == 4 and "use at most 3" in err, err
    code, out, err = rpctl("restart", "worker-1", "--group", "web", "--", "true")
    assert code == 2 and "was started by `rpctl run`" in err, err
    assert {n: m["pid"] for n, m in members(rpctl).items()} == before
    assert all(m["state"] == "active" for m in members(rpctl).values())

    with ClientLoad(PORT, CONCURRENCY) as load:
        wait_until("load to flow", lambda: sum(members(rpctl)[n]["selected"] for n in NAMES) > 300)
        rpctl.ok("rollout", "--group", "web", "--batch", "2")
    after = r.wait_members(rpctl, NAMES)
    assert all(after[n]["pid"] != before[n] for n in NAMES)
    _assert_no_loss(load.tally, 500)


def test_restart_leaves_an_operator_drained_member_drained(launch, rpctl):
    r = launch(["--group", "web", "-n", 2, "--listen", f"127.0.0.1:{PORT}"], WORKER)
    before = r.wait_members(rpctl, {"worker-1", "worker-2"})
    rpctl.ok("drain", "worker-2", "--group", "web")
    out = rpctl.ok("restart", "worker-2", "--group", "web")
    assert "left drained as before" in out, out
    m = wait_until("worker-2 relaunched", lambda: members(rpctl)["worker-2"])
    assert m["pid"] != before["worker-2"]["pid"] and m["state"] in ("draining", "drained")


class Outsiders:
    """Demo workers on their own sockets (not started by rpctl run), and the
    replacements rpctl starts for them: all stopped after the test."""

    def __init__(self):
        self.procs = []
        self.pids: list[int] = []

    def start(self, name: str):
        proc, ready = demo_worker.spawn(name, f"127.0.0.1:{PORT}")
        self.procs.append(proc)
        return ready

    def register(self, rpctl, names) -> dict[str, int]:
        pids = {}
        for name in names:
            ready = self.start(name)
            rpctl.ok("register", name, "--pid", ready.pid, "--fd", ready.fd, "--group", "ext")
            pids[name] = ready.pid
        return pids

    def track(self, pid: int) -> None:
        """A replacement rpctl started (not our child): killed at the end."""
        self.pids.append(pid)

    def stop(self) -> None:
        for proc in self.procs:
            demo_worker.stop(proc, timeout=1)
        for pid in self.pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def outsiders(netns):
    o = Outsiders()
    yield o
    o.stop()


def test_restart_of_an_outside_member_starts_its_replacement_under_load(rpctl, outsiders):
    pids = outsiders.register(rpctl, ["ext-1", "ext-2", "ext-3"])
    rpctl.ok("weights", "ext-1=3", "--group", "ext")
    replacement = [sys.executable, "-m", "rpctl.cli.demo.worker", "--name", "$RPCTL_MEMBER",
                   "--listen", f"127.0.0.1:{PORT}"]
    with ClientLoad(PORT, CONCURRENCY) as load:
        wait_until("load to flow", lambda: members(rpctl, "ext")["ext-1"]["selected"] > 200)
        out = rpctl.ok("restart", "ext-1", "--group", "ext", "--", *replacement)
    after = members(rpctl, "ext")["ext-1"]
    outsiders.track(after["pid"])
    assert f"restarted ext-1: pid {pids['ext-1']} -> {after['pid']}" in out, out
    assert not alive(pids["ext-1"])
    assert after["state"] == "active" and after["weight"] == 3
    _assert_no_loss(load.tally, 500)
    again = loadgen.run_tcp("127.0.0.1", PORT, count=1000, concurrency=CONCURRENCY)
    assert again.by_name["ext-1"] > 300, again.to_dict()


def test_restart_hook_runs_the_command_and_registers_the_new_listener(rpctl, outsiders):
    pids = outsiders.register(rpctl, ["ext-1", "ext-2"])
    old = pids["ext-1"]
    # What a service manager would do: stop the old process, start a new one
    # that outlives the hook.
    hook = (
        f"kill {old}; "
        f"setsid {sys.executable} -m rpctl.cli.demo.worker --name \"$RPCTL_MEMBER\" "
        f"--listen 127.0.0.1:{PORT} </dev/null >/dev/null 2>&1 &"
    )
    out = rpctl.ok("restart", "ext-1", "--group", "ext", "--hook", "--", "sh", "-c", hook)
    after = members(rpctl, "ext")["ext-1"]
    outsiders.track(after["pid"])
    assert after["pid"] != old and after["state"] == "active", out
    tally = loadgen.run_tcp("127.0.0.1", PORT, count=800, concurrency=CONCURRENCY)
    assert set(tally.by_name) == {"ext-1", "ext-2"}, tally.to_dict()
    assert sum(tally.failures.values()) == 0


def test_failed_replacement_leaves_the_member_drained_and_the_group_serving(rpctl, outsiders):
    outsiders.register(rpctl, ["ext-1", "ext-2"])
    code, out, err = rpctl("restart", "ext-1", "--group", "ext", "--start-timeout", "5",
                           "--", sys.executable, "-c", "raise SystemExit(3)")
    lines = err.strip().splitlines()
    assert code == 1, err
    assert "exited with status 3 before it listened; ext-1 left drained" in lines[-1], err
    state = members(rpctl, "ext")
    assert state["ext-1"]["state"] == "gone" and state["ext-1"]["target_share"] == 0
    tally = loadgen.run_tcp("127.0.0.1", PORT, count=500, concurrency=CONCURRENCY)
    assert set(tally.by_name) == {"ext-2"}, tally.to_dict()
    assert sum(tally.failures.values()) == 0


def test_restart_refuses_outside_member_without_command(rpctl, outsiders):
    outsiders.register(rpctl, ["ext-1", "ext-2"])
    code, out, err = rpctl("restart", "ext-1", "--group", "ext")
    assert code == 2 and "was not started by `rpctl run`" in err, err
    assert members(rpctl, "ext")["ext-1"]["state"] == "active"


def test_drain_wait_shows_queued_and_handshakes_then_times_out_with_exit_8(netns, rpctl, make_members):
    """drain --wait reports what is queued on the member and the port's
    handshakes; past --timeout it exits 8 saying what is still queued."""
    m = make_members(port=PORT)
    held, other = m.add(), m.add()
    # TCP_DEFER_ACCEPT keeps a handshake open until the client sends data: a
    # way to hold requests in their handshake on loopback.
    held.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 30)
    other.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 30)
    rpctl.ok(*m.register_args("held", held))
    rpctl.ok(*m.register_args("other", other, weight=0))
    clients = [socket.create_connection(("127.0.0.1", PORT), timeout=3) for _ in range(6)]
    try:
        wait_until("6 handshakes", lambda: diag.handshakes(PORT) == 6)
        for c in clients[:4]:
            c.sendall(b"GET / HTTP/1.0\r\n\r\n")  # data completes these four: queued on held
        wait_until("4 queued", lambda: members(rpctl, None)["held"]["queue"] == 4)
        rpctl.ok("weights", "other=1")
        code, out, err = rpctl("drain", "held", "--wait", "--timeout", "0.5")
        assert code == 8, err
        assert "held: 4 queued, 2 in handshake on the port" in err, err
        assert err.strip().splitlines()[-1] == (
            "rpctl: drain held: still 4 queued after 0.5s; it takes no new connection"
        ), err
        m.drain_queues(collections.Counter())
        assert rpctl("drain", "held", "--wait", "--timeout", "5")[0] == 0
        assert members(rpctl, None)["held"]["state"] == "drained"
    finally:
        for c in clients:
            c.close()
