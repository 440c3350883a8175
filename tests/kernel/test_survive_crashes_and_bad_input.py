"""Members that die, writers that crash, input that must change nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from rpctl.cli.demo import loadgen
from rpctl.cli.demo import worker as demo_worker
from rpctl.controller.contract import abi
from rpctl.controller.store.group import Group
from rpctl.controller.store.state import Layout

from tests.support.launched import members as group_members
from tests.support.traffic import PORT, tcp_connections

pytestmark = pytest.mark.kernel


@pytest.fixture
def workers():
    procs = []

    def start(name: str, port: int = PORT):
        proc, ready = demo_worker.spawn(name, f"127.0.0.1:{port}")
        procs.append(proc)
        return proc, ready

    yield start
    for proc in procs:
        demo_worker.stop(proc, timeout=1)


def test_member_closing_its_socket_loses_no_connection(netns, rpctl, workers):
    procs = {}
    for name in ("w1", "w2", "w3"):
        proc, ready = workers(name)
        rpctl.ok("register", name, "--pid", ready.pid, "--fd", ready.fd)
        procs[name] = proc
    stop = threading.Event()
    result = {}

    def load():
        result["tally"] = loadgen.run_tcp("127.0.0.1", PORT, duration=4.0, concurrency=8, stop=stop)

    t = threading.Thread(target=load)
    t.start()
    time.sleep(1.5)
    # SIGTERM: the worker closes its listener while connections stream in.
    demo_worker.stop(procs["w2"])
    t.join()
    tally = result["tally"]
    assert tally.total_ok() > 500, f"load generator barely ran: {tally}"
    assert sum(tally.failures.values()) == 0, f"failed connections: {dict(tally.failures)}"
    members = group_members(rpctl, None)
    assert members["w2"]["state"] == "gone"
    assert members["w2"]["target_share"] == 0
    # The next write drops the gone member from the table; steering goes on.
    rpctl.ok("weights", "w1=2")
    after = loadgen.run_tcp("127.0.0.1", PORT, count=600, concurrency=4)
    assert sum(after.failures.values()) == 0
    assert set(after.by_name) == {"w1", "w3"}
    print(f"member closed mid-load: {tally.total_ok()} connections, 0 failed, replies {dict(tally.by_name)}")


_SETUP_AND_CHANGE = """
import os, sys
from rpctl.controller.store import group
pid, fd_a, fd_b = map(int, sys.argv[1:4])
group.register("a", pid, fd_a)
group.register("b", pid, fd_b)
os.environ["RPCTL_FAILPOINT"] = "before-flip:pause"
group.set_weights({"b": 0})
"""


def _maps_bytes(group_name: str) -> dict[str, bytes]:
    """Everything a writer may touch, byte for byte (counters left out)."""
    with Group.open(group_name, Layout()) as g:
        out = {
            "ctl": bytes(g.ctl()),
            "gens": b"".join(bytes(x) for x in g.maps["gens"].read_structs(abi.RpGen, abi.RP_GENERATIONS)),
            "members": b"".join(bytes(m) for m in g.members()),
            "socks": repr([g.socket_cookie(i) for i in range(abi.RP_MAX_MEMBERS)]).encode(),
        }
    return out


def test_sigkill_mid_weight_change_leaves_old_table_live(netns, rpctl, make_members):
    members = make_members()
    a, b = members.add(), members.add()
    # The process that sets the group up is killed inside a weight change,
    # after writing the new table and before making it live.
    proc = subprocess.Popen(
        [sys.executable, "-c", _SETUP_AND_CHANGE, str(os.getpid()), str(a.fileno()), str(b.fileno())],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stderr.readline()
        assert "failpoint before-flip reached" in line, line
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL

    state = group_members(rpctl, None)
    assert (state["a"]["weight"], state["b"]["weight"]) == (1, 1), "status reads the old, live table"
    counts, failures = tcp_connections(members, 2000, seed=11)
    assert failures == 0 and sum(counts.values()) == 2000
    assert counts[1] > 800, f"old table (1:1) still steers: {dict(counts)}"

    # The lock died with the writer: the next change goes through.
    rpctl.ok("weights", "b=0")
    counts, failures = tcp_connections(members, 1000, seed=12)
    assert failures == 0 and counts[1] == 0


def test_bad_input_fails_in_one_line_and_changes_nothing(netns, rpctl, make_members):
    members = make_members()
    rpctl.ok(*members.register_args("a", members.add(), weight=2))
    rpctl.ok(*members.register_args("b", members.add(), weight=1))
    rpctl.ok("drain", "b")
    # Sockets that must be refused: no SO_REUSEPORT, and another port.
    plain = members.add(reuseport=False, port=PORT + 1)
    other = members.add(port=PORT + 2)
    pid = os.getpid()
    before = _maps_bytes("tcp-7000")
    cases = [
        (["weights", "nosuch=1"], 3),
        (["weights", "a=-1"], 4),
        (["weights", "a=x"], 4),
        (["weights", "a=1.5"], 4),
        (["weights", "a=10001"], 4),
        (["weights", "a=0", "b=0"], 4),
        (["register", "a", "--pid", pid, "--fd", members.socks[0].fileno()], 4),
        (["register", "c", "--pid", pid, "--fd", plain.fileno(), "--group", "tcp-7000"], 4),
        (["register", "c", "--pid", pid, "--fd", other.fileno(), "--group", "tcp-7000"], 4),
        (["register", "c", "--pid", 2**22 + 12345, "--fd", 3], 4),
        (["register", "c", "--pid", pid, "--fd", 0], 4),
        (["drain", "nosuch"], 3),
        (["drain", "a"], 4),  # the last live member
        (["undrain", "nosuch"], 3),
        (["unregister", "nosuch"], 3),
        (["status", "--group", "nosuch"], 3),
        (["weights", "--group", "bad.name"], 4),
    ]
    for argv, want in cases:
        code, out, err = rpctl(*argv)
        lines = err.strip().splitlines()
        assert code == want, f"rpctl {argv}: exit {code}, want {want}: {err}"
        assert len(lines) == 1 and lines[0].startswith("rpctl: "), f"rpctl {argv}: {err!r}"
    assert _maps_bytes("tcp-7000") == before
    assert Layout().groups() == ["tcp-7000"], "no group was created by a refused register"


def test_doctor_passes_on_this_machine(netns, rpctl):
    code, out, err = rpctl("doctor", "--json")
    checks = json.loads(out)["checks"]
    failed = [c for c in checks if not c["ok"] and not c["warning"]]
    assert code == 0 and not failed, failed
    names = {c["name"] for c in checks}
    assert {"kernel", "privileges", "bpffs", "kernel headers", "bcc", "compiled programs"} <= names


def test_cli_entry_point_runs_as_a_process(netns, rpctl, make_members):
    """The same commands through a real `rpctl` process, as an operator runs them."""
    members = make_members(proto="udp")
    s = members.add()
    proc = rpctl.subprocess("register", "dns-1", "--pid", os.getpid(), "--fd", s.fileno())
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "created group udp-7000" in out
    proc = rpctl.subprocess("weights", "--json")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert json.loads(out)["members"][0]["name"] == "dns-1"


def test_a_register_killed_before_its_flip_does_not_keep_its_socket_from_joining(netns, rpctl, make_members):
    """The killed writer left its socket in the socket array under an entry that never went
    live; the kernel refuses a socket that is in an array already (EBUSY), so the next
    writer clears such entries first: registering the same socket again works."""
    members = make_members()
    a, b = members.add(), members.add()
    rpctl.ok(*members.register_args("a", a))
    killed = rpctl.subprocess(*members.register_args("b", b), env={**os.environ, "RPCTL_FAILPOINT": "before-flip:exit"})
    _, err = killed.communicate(timeout=60)
    assert killed.returncode == -signal.SIGKILL and "failpoint before-flip reached" in err, err
    assert set(group_members(rpctl, None)) == {"a"}
    rpctl.ok(*members.register_args("b", b))
    assert set(group_members(rpctl, None)) == {"a", "b"}
    counts, failures = tcp_connections(members, 400, seed=3)
    assert failures == 0 and counts[0] > 0 and counts[1] > 0, dict(counts)
