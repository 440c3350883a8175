"""rpctl metrics over a real group: a real exporter process, scraped over HTTP.

The exporter runs as an operator runs it (`python -m rpctl.cli metrics`),
inside the test's network namespace; the connections are real and counted
where they arrive, on the member sockets.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.launched import stderr_line
from tests.support.traffic import ExtraRuns, tcp_connections

pytestmark = pytest.mark.kernel

LISTEN = "127.0.0.1:9464"  # a fresh namespace: nothing else listens there


@pytest.fixture
def exporter(rpctl):
    """Start `rpctl metrics --listen LISTEN ...` once it serves; stopped with SIGTERM after the test
    (and the test can stop it itself to check how it exits)."""
    procs = []

    def start(*args: str) -> subprocess.Popen:
        proc = rpctl.subprocess("metrics", "--listen", LISTEN, *args)
        procs.append(proc)
        stderr_line(proc, "serving", 30)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


def scrape() -> dict[str, list[tuple[dict, float]]]:
    """One scrape: {sample name: [(labels, value)]}."""
    with urllib.request.urlopen(f"http://{LISTEN}/metrics", timeout=5) as reply:
        assert reply.status == 200
        text = reply.read().decode()
    out: dict = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def per_member(got: dict, name: str) -> dict[str, float]:
    return {labels["member"]: value for labels, value in got.get(name, [])}


def test_selected_counter_rises_by_exactly_what_each_member_accepted(netns, rpctl, make_members, exporter):
    members = make_members()
    names = ["w1", "w2", "w3"]
    for name, weight in zip(names, (1, 3, 1)):
        rpctl.ok(*members.register_args(name, members.add(), weight=weight))
    rpctl.ok("drain", "w3")  # a member whose counter must stay where it is
    proc = exporter()

    before = scrape()
    assert before["rpctl_up"] == [({}, 1.0)]
    extra_runs = ExtraRuns()
    counts, failures = tcp_connections(members, 600, seed=3)
    allowed = extra_runs.allowed(600)
    after = scrape()

    assert failures == 0 and sum(counts.values()) == 600
    accepted = {name: counts[i] for i, name in enumerate(names)}
    assert accepted["w1"] > 0 and accepted["w2"] > accepted["w1"] and accepted["w3"] == 0, accepted
    selected_before, selected_after = (per_member(got, "rpctl_member_selected_total") for got in (before, after))
    selected = {name: selected_after[name] - selected_before[name] for name in names}
    # Exactly: every connection ran the program once and went through its member's slot.  A SYN sent
    # again or a stray segment answered with a reset (traffic.ExtraRuns, a loaded machine) runs it once more.
    if allowed == 0:
        assert selected == accepted
    else:
        for name in names:
            assert accepted[name] <= selected[name] <= accepted[name] + allowed, (selected, accepted)
    assert per_member(after, "rpctl_member_fallback_total") == {name: 0 for name in names}
    # Every connection was accepted: the queues are empty.
    assert per_member(after, "rpctl_member_queued_connections") == {name: 0 for name in names}

    # The same pinned counters `rpctl status` reads, and the states and weights it shows.
    status = json.loads(rpctl.ok("status", "--json"))
    (group,) = status["groups"]
    shown = {m["name"]: m for m in group["members"]}
    assert shown["w3"]["state"] == "drained"
    assert selected_after == {name: shown[name]["selected"] for name in names}
    assert per_member(after, "rpctl_member_weight") == {"w1": 1, "w2": 3, "w3": 1}
    states = {(labels["member"], labels["state"]) for labels, value in after["rpctl_member_state"] if value == 1}
    assert states == {(name, shown[name]["state"]) for name in names}
    assert after["rpctl_group_info"] == [({
        "group": "tcp-7000", "endpoint": "tcp:127.0.0.1:7000", "protocol": "tcp", "mode": "weighted",
        "program_id": str(group["program_id"]), "migration": "true" if group["migration"] else "false",
        "adaptive": "false", "balance": "hash",
    }, 1.0)]

    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert err.splitlines()[-1] == "rpctl metrics: stopped (SIGTERM)" and "Traceback" not in err


def test_a_writer_holding_the_lock_does_not_hold_up_a_scrape(netns, rpctl, make_members, exporter):
    members = make_members()
    for name in ("a", "b"):
        rpctl.ok(*members.register_args(name, members.add()))
    exporter("--group", "tcp-7000")
    # A weight change stopped after writing the next generation, before making it live: it holds
    # the group's lock for as long as it lives.
    writer = rpctl.subprocess("weights", "a=5", env={**os.environ, "RPCTL_FAILPOINT": "before-flip:pause"})
    try:
        stderr_line(writer, "failpoint before-flip reached", 30)
        started = time.monotonic()
        got = scrape()
        took = time.monotonic() - started
        assert got["rpctl_up"] == [({}, 1.0)]
        # The live generation, not the half-published one.
        assert per_member(got, "rpctl_member_weight") == {"a": 1, "b": 1}
        assert took < 2, f"a scrape took {took:.2f}s while a writer held the lock"
    finally:
        writer.kill()
        writer.communicate(timeout=10)
    assert per_member(scrape(), "rpctl_member_weight") == {"a": 1, "b": 1}
