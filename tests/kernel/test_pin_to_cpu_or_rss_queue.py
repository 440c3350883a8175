"""Pinned modes on the real kernel: CPU mode (TCP, UDP, member processes pinned by
affinity), RSS mode against a synthetic device description, and the device reader.

On loopback a packet is handled on the CPU that sent it, so a client thread
pinned to CPU c makes the program run on CPU c: that is how CPU mode is
driven on a two-core machine.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
from rpctl.cli.demo import loadgen
from rpctl.cli.demo import worker as demo_worker
from rpctl.controller.kernel import rss
from rpctl.controller.ops import pin
from rpctl.controller.tables import toeplitz

from tests.support.rss_device import synthetic_device
from tests.support.traffic import ExtraRuns, on_cpu, tcp_connections, udp_datagrams

pytestmark = pytest.mark.kernel

N = 600

@pytest.fixture(autouse=True, scope="module")
def two_cpus():
    online = pin.online_cpus()
    if not {0, 1} <= online:
        pytest.fail(f"pin tests drive CPUs 0 and 1; online here: {sorted(online)}", pytrace=False)


def status(rpctl) -> dict:
    (group,) = json.loads(rpctl.ok("status", "--json"))["groups"]
    return group


def by_name(group: dict) -> dict[str, dict]:
    return {m["name"]: m for m in group["members"]}


def traffic(members, proto: str, n: int, seed: int, peers=None):
    if proto == "tcp":
        counts, failures = tcp_connections(members, n, seed=seed, peers=peers)
        assert failures == 0
    else:
        counts = udp_datagrams(members, n, seed=seed, peers=peers)
    assert sum(counts.values()) == n, f"every connection or datagram reached a member: {dict(counts)}"
    return counts


def program_runs_bound(proto: str, n: int, extra_runs: ExtraRuns, clients: int = N) -> int:
    """The most program runs `n` of the `clients` connections may cause: one
    each, plus the extra runs the stack accounts for (traffic.ExtraRuns).
    A datagram runs the program exactly once."""
    return n + (extra_runs.allowed(clients) if proto == "tcp" else 0)


# CPU mode ---------------------------------------------------------------------------


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_cpu_mode_sends_each_cpu_to_its_member_and_drained_ones_fall_back(netns, rpctl, make_members, proto):
    members = make_members(proto=proto)
    for name in ("w1", "w2"):
        rpctl.ok(*members.register_args(name, members.add()))
    out = rpctl.ok("pin", "cpu", "--map", "w1=0,w2=1")
    assert "CPU 0 -> w1" in out and "CPU 1 -> w2" in out
    group = status(rpctl)
    assert group["mode"] == "cpu"
    assert {m["name"]: m["pins"] for m in group["members"]} == {"w1": [0], "w2": [1]}

    for cpu, seed in ((0, 1), (1, 2)):
        with on_cpu(cpu):
            counts = traffic(members, proto, N, seed)
        assert counts[cpu] == N, f"CPU {cpu}: {dict(counts)}"

    # Pinned choices count as such; nothing fell back.
    group = status(rpctl)
    for name in ("w1", "w2"):
        assert N <= by_name(group)[name]["pinned"], by_name(group)[name]
    assert group["counters"]["pin_fallbacks"] == 0 and group["counters"]["pin_unassigned"] == 0

    # A drained member of CPU 0: nothing reaches it, every connection from
    # CPU 0 falls back to the weighted table (all of it w2's) and is counted.
    rpctl.ok("drain", "w1")
    assert status(rpctl)["mode"] == "cpu", "a drain keeps the mode"
    extra_runs = ExtraRuns()
    with on_cpu(0):
        counts = traffic(members, proto, N, seed=3)
    assert counts[0] == 0 and counts[1] == N, dict(counts)
    fallbacks = status(rpctl)["counters"]["pin_fallbacks"]
    assert N <= fallbacks <= program_runs_bound(proto, N, extra_runs), fallbacks

    # Undrained, CPU 0 is w1's again; a weight change keeps the pins.
    rpctl.ok("undrain", "w1")
    rpctl.ok("weights", "w1=2")
    with on_cpu(0):
        counts = traffic(members, proto, N, seed=4)
    assert counts[0] == N, dict(counts)

    # Off: weighted selection again, both members share CPU 0's connections.
    rpctl.ok("pin", "off")
    group = status(rpctl)
    assert group["mode"] == "weighted" and all(m["pins"] == [] for m in group["members"])
    with on_cpu(0):
        counts = traffic(members, proto, N, seed=5)
    assert counts[0] > N // 4 and counts[1] > N // 8, dict(counts)


def test_cpu_mode_leaves_a_cpu_without_member_to_the_weighted_table(netns, rpctl, make_members):
    members = make_members()
    for name in ("w1", "w2"):
        rpctl.ok(*members.register_args(name, members.add()))
    out = rpctl.ok("pin", "cpu", "--map", "w2=1")
    assert "CPU 0: no member" in out
    extra_runs = ExtraRuns()
    with on_cpu(0):
        counts = traffic(members, "tcp", N, seed=6)
    assert counts[0] > 0 and counts[1] > 0, "the weighted table spreads CPU 0's connections"
    unassigned = status(rpctl)["counters"]["pin_unassigned"]
    assert N <= unassigned <= program_runs_bound("tcp", N, extra_runs)


def test_unregistered_member_loses_its_cpu(netns, rpctl, make_members):
    members = make_members()
    for name in ("w1", "w2", "w3"):
        rpctl.ok(*members.register_args(name, members.add()))
    rpctl.ok("pin", "cpu", "--map", "w1=0,w2=1")
    rpctl.ok("unregister", "w1")
    group = status(rpctl)
    assert group["mode"] == "cpu"
    assert {m["name"]: m["pins"] for m in group["members"]} == {"w2": [1], "w3": []}
    with on_cpu(0):
        counts = traffic(members, "tcp", N, seed=7)
    assert counts[0] == 0


def test_migrating_requests_skip_the_pin_table(netns, rpctl, make_members):
    """A closing listener's queue is placed by the weighted table and counted
    as migrated, not by the pin of the CPU that happens to close it."""
    members = make_members()
    w1, w2 = members.add(), members.add()
    rpctl.ok(*members.register_args("w1", w1))
    rpctl.ok(*members.register_args("w2", w2))
    rpctl.ok("pin", "cpu", "--map", "w1=0,w2=1")
    clients = []
    try:
        with on_cpu(0):
            for i in range(100):
                c = socket.socket()
                c.settimeout(5)
                c.bind((f"127.1.0.{i + 1}", 0))
                c.connect(("127.0.0.1", members.port))
                clients.append(c)
        before = by_name(status(rpctl))["w2"]
        with on_cpu(1):  # pin[1] is w2: a pinned choice here would count as "pinned"
            w1.close()
        taken = []
        while True:
            try:
                taken.append(w2.accept()[0])
            except BlockingIOError:
                break
        assert len(taken) == 100
        for conn in taken:
            conn.close()
        after = by_name(status(rpctl))["w2"]
        assert after["migrated"] - before["migrated"] == 100
        assert after["pinned"] == before["pinned"]
    finally:
        for c in clients:
            c.close()


# Auto assignment from member processes --------------------------------------------


def test_pin_cpu_from_member_affinity_and_its_refusals(netns, rpctl):
    port = 7090
    procs = []
    try:
        pids = {}
        for name, cpu in (("worker-1", 0), ("worker-2", 1)):
            proc, ready = demo_worker.spawn(name, f"127.0.0.1:{port}")
            procs.append(proc)
            os.sched_setaffinity(ready.pid, {cpu})
            pids[name] = ready.pid
            rpctl.ok("register", name, "--pid", ready.pid, "--fd", ready.fd)

        # worker-2 may run anywhere: no CPU of its own.
        os.sched_setaffinity(pids["worker-2"], {0, 1})
        code, out, err = rpctl("pin", "cpu")
        assert code == 4 and out == ""
        assert "worker-2 may run on every CPU" in err and len(err.splitlines()) == 1, err
        assert status(rpctl)["mode"] == "weighted", "a refused pin changes nothing"

        # Both on CPU 0: which one is local?  Both are named.
        os.sched_setaffinity(pids["worker-2"], {0})
        code, _, err = rpctl("pin", "cpu")
        assert code == 4 and "worker-1 and worker-2 may both run on CPU 0" in err, err
        assert status(rpctl)["mode"] == "weighted"

        os.sched_setaffinity(pids["worker-2"], {1})
        out = rpctl.ok("pin", "cpu")
        assert "CPU 0 -> worker-1" in out and "CPU 1 -> worker-2" in out
        assert {m["name"]: m["pins"] for m in status(rpctl)["members"]} == {"worker-1": [0], "worker-2": [1]}

        for cpu, name in ((0, "worker-1"), (1, "worker-2")):
            with on_cpu(cpu):
                tally = loadgen.run_tcp("127.0.0.1", port, count=300, concurrency=2)
            assert tally.by_name == {name: 300}, tally.to_dict()
    finally:
        for proc in procs:
            demo_worker.stop(proc, timeout=1)


# RSS mode ---------------------------------------------------------------------------


ADDRS_AND_PORTS = rss.RXH_ADDRS | rss.RXH_PORTS


@pytest.mark.parametrize(
    "proto, family, hashed",
    [
        ("tcp", socket.AF_INET, ADDRS_AND_PORTS),
        ("udp", socket.AF_INET, rss.RXH_ADDRS),   # many NICs hash UDP over addresses only
        ("udp", socket.AF_INET, ADDRS_AND_PORTS),  # others over the ports too: read from a UDP header
        ("tcp", socket.AF_INET6, ADDRS_AND_PORTS),
    ],
    ids=["tcp4-4tuple", "udp4-addresses", "udp4-4tuple", "tcp6-4tuple"],
)
def test_rss_mode_follows_the_nics_hash_through_the_indirection_table(
    netns, rpctl, make_members, proto, family, hashed
):
    members = make_members(proto=proto, family=family)
    for name in ("w1", "w2"):
        rpctl.ok(*members.register_args(name, members.add()))
    v = 6 if family == socket.AF_INET6 else 4
    info = synthetic_device({f"{proto}{v}": hashed})
    # The same call `rpctl pin rss --dev` makes with what the reader filled.
    result = pin.pin_rss(info, {"w1": 0, "w2": 1})
    assert result.assignment == {0: "w1", 1: "w2", 2: "w1"} and result.unassigned == [3]
    group = status(rpctl)
    assert group["mode"] == "rss" and group["pin_device"] == "synth0"
    assert {m["name"]: m["pins"] for m in group["members"]} == {"w1": [0, 2], "w2": [1]}

    peers: list = []
    extra_runs = ExtraRuns()
    traffic(members, proto, N, seed=12, peers=peers)
    expected_member = {0: 0, 1: 1, 2: 0}
    wrong, on_queue3, queues = [], 0, set()
    for position, (addr, port) in peers:
        data = toeplitz.hash_input(addr, members.host, port, members.port, ports=hashed & rss.RXH_PORTS != 0)
        queue = toeplitz.queue_of(info.indir, toeplitz.toeplitz(info.key, data))
        queues.add(queue)
        if queue == 3:
            on_queue3 += 1
        elif position != expected_member[queue]:
            wrong.append((addr, port, queue, position))
    assert not wrong, f"{len(wrong)} of {N} not on their queue's member, e.g. {wrong[:3]}"
    assert queues == {0, 1, 2, 3}, "the flows covered every queue"
    counters = status(rpctl)["counters"]
    assert on_queue3 <= counters["pin_unassigned"] <= program_runs_bound(proto, on_queue3, extra_runs)
    assert counters["rss_unhashed"] == 0 and counters["pin_fallbacks"] == 0


# The device reader ------------------------------------------------------------------


def test_device_reader_on_veth_and_lo_says_there_is_no_rss(netns, rpctl, make_members):
    subprocess.run(["ip", "link", "add", "rpv0", "numrxqueues", "4", "numtxqueues", "4", "type", "veth",
                    "peer", "name", "rpv1", "numrxqueues", "4", "numtxqueues", "4"], check=True)
    veth = rss.read_device("rpv0")
    # veth reports its queues through ETHTOOL_GCHANNELS but has no
    # indirection table, key or hash fields (ETHTOOL_GRSSH, GRXFH fail).
    assert (veth.rx_queues, veth.queues_from) == (4, "GCHANNELS")
    assert veth.indir == [] and "indirection" in veth.unsupported
    # This test entered its namespace with setns(): /sys is still the host's,
    # whose devices differ, so nothing is taken from it (interrupts, RPS).
    assert "sysfs" in veth.unsupported and veth.irqs == {}
    lo = rss.read_device("lo")
    assert lo.indir == [] and lo.rx_queues == 1 and "Operation not supported" in lo.unsupported["indirection"]

    members = make_members()
    rpctl.ok(*members.register_args("w1", members.add()))
    code, out, err = rpctl("pin", "rss", "--dev", "rpv0", "--map", "w1=0")
    assert code == 4 and out == "" and "rpv0: the device has no RSS" in err and len(err.splitlines()) == 1, err
    assert status(rpctl)["mode"] == "weighted"

    code, out, err = rpctl("pin", "rss", "--dev", "lo", "--explain")
    assert code == 4 and "no RSS" in out and "device lo: 1 receive queue" in out, out
    assert len(err.splitlines()) == 1 and "no RSS" in err

    code, out, err = rpctl("pin", "rss", "--dev", "rpv0", "--explain", "--json")
    doc = json.loads(out)
    assert code == 4 and doc["rx_queues"] == 4 and doc["indirection_size"] == 0
    assert [row["queue"] for row in doc["chain"]] == [0, 1, 2, 3] and doc["problems"]

    # `ip netns exec` mounts a sysfs of the namespace: then rpctl reads it.
    probe = ("from rpctl.controller import rss; i = rss.read_device('rpv0'); "
             "print(i.rx_queues, i.queues_from, sorted(i.unsupported))")
    out = subprocess.run(["ip", "netns", "exec", netns.name, sys.executable, "-c", probe],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out[:2] == ["4", "GCHANNELS"] and "sysfs" not in out[2:], out

    code, _, err = rpctl("pin", "rss", "--dev", "nosuch0")
    assert code == 3 and "no network device 'nosuch0'" in err
    assert status(rpctl)["mode"] == "weighted"
