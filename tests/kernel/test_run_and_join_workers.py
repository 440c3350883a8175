"""`rpctl run` (controller.launcher) and join() on the real kernel.

The launcher runs as a subprocess (`python -m rpctl.cli run ...`),
as an operator would run it: it installs signal handlers and reaps its
children, neither of which a pytest process should share.  Its stdout (the
workers' `ready` lines) and stderr (its event log) go to files, never to
pipes: a full pipe would block the launcher and its children.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time

import pytest
from rpctl.cli.demo import loadgen
from rpctl.cli.demo import worker as demo_worker
from rpctl.controller.contract.errors import InvalidInput
from rpctl.controller.store.join import join
from rpctl.controller.store.state import Layout

from tests.support.launched import alive, members, ppid_of, wait_until
from tests.support.traffic import tcp_connections

pytestmark = pytest.mark.kernel

PORT = 7090
CONCURRENCY = 8
# A worker that takes its name from the environment the launcher gives it
# (and checks that LISTEN_FDNAMES says the same), with no shell in between.
WORKER_FROM_ENV = [
    sys.executable,
    "-c",
    "import os, sys; assert os.environ['LISTEN_FDNAMES'] == os.environ['RPCTL_MEMBER']; "
    "os.execv(sys.executable, "
    "[sys.executable, '-m', 'rpctl.cli.demo.worker', '--name', os.environ['RPCTL_MEMBER']])",
]
NAMES = {"worker-1", "worker-2", "worker-3"}


def web(n: int = 3, *extra) -> list:
    return ["--group", "web", "-n", n, "--listen", f"127.0.0.1:{PORT}", *extra]


def test_run_registers_its_children_and_they_serve(launch, rpctl):
    r = launch(web(3), WORKER_FROM_ENV)
    found = r.wait_members(rpctl, NAMES)
    for m in found.values():
        assert ppid_of(m["pid"]) == r.proc.pid
        assert m["fd"] == 3
    tally = loadgen.run_tcp("127.0.0.1", PORT, count=1500, concurrency=CONCURRENCY)
    assert set(tally.by_name) == NAMES, tally.to_dict()
    assert sum(tally.failures.values()) == 0, tally.to_dict()
    assert "created group web on tcp:127.0.0.1:7090 with 3 members" in r.stderr()


def test_kill9_child_is_replaced_and_only_its_own_connections_fail(launch, rpctl):
    r = launch(web(3), WORKER_FROM_ENV)
    victim = r.wait_members(rpctl, NAMES)["worker-2"]["pid"]
    result = {}

    def load():
        result["tally"] = loadgen.run_tcp("127.0.0.1", PORT, duration=4.0, concurrency=CONCURRENCY)

    t = threading.Thread(target=load)
    t.start()
    try:
        time.sleep(1.0)
        os.kill(victim, signal.SIGKILL)
    finally:
        t.join()
    tally = result["tally"]
    after = r.wait_members(rpctl, NAMES)
    assert after["worker-2"]["pid"] != victim
    assert f"worker-2 (pid {victim}) exited with signal 9 (SIGKILL); restarting in 0.5s" in r.stderr()

    failures = sum(tally.failures.values())
    print(f"\nkill -9 of worker-2 under load: {tally.total_ok()} ok, {failures} failed "
          f"{dict(tally.failures)}, replies {dict(tally.by_name)}")
    assert tally.total_ok() > 1000, tally.to_dict()
    # The connections queued on worker-2's socket survive (the launcher holds
    # the socket; the replacement accepts them), so only the ones the dead
    # process had accepted and not answered can fail.  The load generator
    # has at most CONCURRENCY connections open at any moment: that bounds them.
    assert failures <= CONCURRENCY, tally.to_dict()

    again = loadgen.run_tcp("127.0.0.1", PORT, count=1500, concurrency=CONCURRENCY)
    assert set(again.by_name) == NAMES, again.to_dict()
    assert sum(again.failures.values()) == 0, again.to_dict()


def test_sigterm_stops_children_and_unloads_the_group(launch, rpctl):
    # The brief's example: the launcher expands $LISTEN_FDNAMES in CMD.
    cmd = [sys.executable, "-m", "rpctl.cli.demo.worker", "--name", "$LISTEN_FDNAMES"]
    r = launch(web(2, "--name", "w{i}"), cmd)
    pids = [m["pid"] for m in r.wait_members(rpctl, {"w1", "w2"}).values()]
    tally = loadgen.run_tcp("127.0.0.1", PORT, count=600, concurrency=4)
    assert set(tally.by_name) == {"w1", "w2"}, tally.to_dict()

    assert r.terminate() == 0, r.stderr()
    assert not [pid for pid in pids if alive(pid)]
    assert Layout().groups() == []
    err = r.stderr()
    assert "unloaded group web" in err, err
    for pid in pids:
        assert f"(pid {pid}) exited with status 0" in err, err


def test_sigkilled_launcher_leaves_no_children(launch, rpctl):
    r = launch(web(2), WORKER_FROM_ENV)
    pids = [m["pid"] for m in r.wait_members(rpctl, {"worker-1", "worker-2"}).values()]
    r.proc.kill()
    r.proc.wait()
    wait_until("children to die with the launcher", lambda: not any(alive(pid) for pid in pids), timeout=3)


def test_controller_refusal_stops_the_children_it_started(launch, rpctl, make_members):
    # Group "taken" belongs to another port: registering the first child fails.
    other = make_members(port=PORT + 1)
    join(other.add(), "outsider", group="taken")
    r = launch(
        ["--group", "taken", "-n", 2, "--listen", f"127.0.0.1:{PORT + 2}"],
        [sys.executable, "-c", "import time; time.sleep(60)"],
    )
    assert r.proc.wait(timeout=15) == InvalidInput.exit_status, r.stderr()
    errors = [line for line in r.stderr().splitlines() if line.startswith("rpctl: ")]
    assert len(errors) == 1 and "does not belong to group 'taken'" in errors[0], r.stderr()
    started = [int(line.split("(pid ")[1].rstrip(")"))
               for line in r.stderr().splitlines() if " started " in line]
    assert started, r.stderr()
    assert not [pid for pid in started if alive(pid)]
    assert set(members(rpctl, "taken")) == {"outsider"}


def test_join_registers_the_callers_own_sockets(netns, rpctl, make_members):
    m = make_members(port=PORT + 3)
    a, b = m.add(), m.add()
    r = join(a, "self-1", group="selfjoin")
    assert r.created and r.group == "selfjoin"
    assert not join(b, "self-2", group="selfjoin", weight=3).created
    found = members(rpctl, "selfjoin")
    assert {n: (x["pid"], x["fd"], x["weight"]) for n, x in found.items()} == {
        "self-1": (os.getpid(), a.fileno(), 1),
        "self-2": (os.getpid(), b.fileno(), 3),
    }
    counts, failures = tcp_connections(m, 2000)
    assert failures == 0
    assert 0 < counts[0] < counts[1], counts
    with pytest.raises(InvalidInput, match="already has a member 'self-1'"):
        join(m.add(), "self-1", group="selfjoin")


@pytest.mark.parametrize(
    "argv, status, message",
    [
        (["-n", "0", "--", "true"], 4, "out of range 1..256"),
        (["-n", "257", "--", "true"], 4, "out of range 1..256"),
        (["-n", "2"], 2, "no command given"),
        (["-n", "2", "--"], 2, "no command given"),
        (["--", "true"], 2, "required: -n"),
        (["-n", "2", "--listen", "localhost:80", "--", "true"], 4, "literal address"),
        (["-n", "2", "--listen", "127.0.0.1:99999", "--", "true"], 4, "0..65535"),
        (["-n", "2", "--group", "a.b", "--", "true"], 4, "group name 'a.b'"),
        (["-n", "2", "--name", "same", "--", "true"], 4, "put {i} in it"),
        (["-n", "2", "--weight", "10001", "--", "true"], 4, "out of range 0..10000"),
        (["-n", "2", "--", "no-such-command-rpctl"], 4, "command not found"),
    ],
)
def test_run_refuses_bad_command_lines(rpctl, argv, status, message):
    code, _, err = rpctl("run", *argv)
    assert code == status
    lines = err.splitlines()
    assert len(lines) == 1 and message in lines[0], lines


def test_launched_joined_and_registered_members_share_one_group(launch, rpctl):
    """One group, three kinds of member: two launched by `rpctl run`, one
    demo worker registered by pid/fd, and one socket that joined itself."""
    r = launch(web(2), WORKER_FROM_ENV)
    r.wait_members(rpctl, {"worker-1", "worker-2"})
    proc, ready = demo_worker.spawn("registered", f"127.0.0.1:{PORT}")
    own = socket.socket()
    try:
        rpctl.ok("register", "registered", "--pid", ready.pid, "--fd", ready.fd, "--group", "web")
        own.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        own.bind(("127.0.0.1", PORT))
        own.listen(128)
        join(own, "joined", group="web", weight=0)
        assert set(members(rpctl)) == {"worker-1", "worker-2", "registered", "joined"}
        tally = loadgen.run_tcp("127.0.0.1", PORT, count=1500, concurrency=CONCURRENCY)
        assert sum(tally.failures.values()) == 0, tally.to_dict()
        assert set(tally.by_name) == {"worker-1", "worker-2", "registered"}, tally.to_dict()
        rpctl.ok("weights", "joined=1", "worker-1=0", "worker-2=0", "registered=0")
        own.setblocking(False)
        ok = 0
        for _ in range(50):
            c = socket.create_connection(("127.0.0.1", PORT), timeout=5)
            conn, _ = own.accept()
            conn.close()
            c.close()
            ok += 1
        assert ok == 50
    finally:
        own.close()
        demo_worker.stop(proc)


def test_resize_grows_and_shrinks_in_place_and_takes_back_a_retiring_member(netns, rpctl):
    """Launcher.resize, driven as rpctl serve drives a launcher (open, start,
    step, close; no signal handlers): a member removed and wanted again
    before its child was stopped is kept (same child, undrained); one whose
    child was already stopping is started again once it is gone."""
    from rpctl.controller.ops.launcher import Launcher

    worker = [sys.executable, "-m", "rpctl.cli.demo.worker", "--name", "$RPCTL_MEMBER"]
    la = Launcher("web", 3, worker, listen=f"127.0.0.1:{PORT}")

    def settle(what: str, check, timeout: float = 10.0):
        def stepped():
            la.step(0.05)
            return check()
        return wait_until(what, stepped, timeout)

    def active(names: set) -> dict:
        found = members(rpctl)
        return found if set(found) == names and all(m["state"] == "active" for m in found.values()) else {}

    la.open()
    try:
        la.start()
        first = settle("three active", lambda: active(NAMES))
        assert la.resize(1) == ["worker-2 drained, to stop", "worker-3 drained, to stop"]
        assert la.resize(2) == ["worker-2 kept"]
        kept = settle("worker-3 removed", lambda: active({"worker-1", "worker-2"}))
        assert {n: kept[n]["pid"] for n in kept} == {n: first[n]["pid"] for n in kept}
        assert not alive(first["worker-3"]["pid"])

        assert la.resize(1) == ["worker-2 drained, to stop"]
        retiring = next(m for m in la.members if m.name == "worker-2")
        settle("worker-2 stopping", lambda: retiring.stop_by is not None)
        assert la.resize(2) == []
        again = settle("worker-2 started again", lambda: active({"worker-1", "worker-2"}))
        assert again["worker-2"]["pid"] != first["worker-2"]["pid"]
        assert again["worker-1"]["pid"] == first["worker-1"]["pid"]
        with pytest.raises(InvalidInput):
            la.resize(0)
    finally:
        la.close()
    assert not any(alive(m["pid"]) for m in first.values())
