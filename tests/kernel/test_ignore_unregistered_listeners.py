"""A listener of the group's port that is not a member: it gets nothing, and
status, its JSON, the dashboard, the metrics and doctor all name it."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time

import pytest
from rich.console import Console
from rpctl.cli.dashboard_history import History, Snapshot
from rpctl.cli.dashboard_screen import render
from rpctl.cli.exporter import GroupCollector
from rpctl.controller.read.views import read_views

from tests.support.metrics import samples, scrape
from tests.support.traffic import PORT, tcp_connections

pytestmark = pytest.mark.kernel

COMM = "stray-srv"
# A server of another name: its own SO_REUSEPORT listener on the members' port,
# never accepting; it prints its pid, socket cookie and inode, then waits for stdin to close.
STRAY = f"""
import os, socket, sys
with open("/proc/self/comm", "w") as f:
    f.write("{COMM}")
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
s.bind(("127.0.0.1", {PORT}))
s.listen(4096)
cookie = int.from_bytes(s.getsockopt(socket.SOL_SOCKET, 57, 8), "little")  # SO_COOKIE
print(os.getpid(), cookie, os.fstat(s.fileno()).st_ino, flush=True)
sys.stdin.read()
"""


@pytest.fixture
def stray(netns):
    proc = subprocess.Popen([sys.executable, "-c", STRAY], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        pid, cookie, inode = map(int, proc.stdout.readline().split())
        yield {"pid": pid, "comm": COMM, "cookie": cookie, "inode": inode}
    finally:
        proc.stdin.close()
        proc.stdout.close()
        proc.wait(timeout=10)


def test_a_listener_of_another_process_gets_nothing_and_is_named_everywhere(netns, rpctl, make_members, stray):
    members = make_members()
    rpctl.ok(*members.register_args("a", members.add()))
    rpctl.ok(*members.register_args("b", members.add()))

    started = time.monotonic()
    (group,) = json.loads(rpctl.ok("status", "--json"))["groups"]
    listed_after = time.monotonic() - started
    assert group["unmanaged"] == [stray], group["unmanaged"]
    assert listed_after < 1.0, f"status took {listed_after:.2f}s"

    n = 2000
    counts, failures = tcp_connections(members, n, seed=31)
    assert failures == 0
    assert sum(counts.values()) == n, f"the members accepted {dict(counts)} of {n}: the rest queued on {COMM}"

    warning = (f"1 unmanaged listener on tcp:127.0.0.1:{PORT}: pid {stray['pid']} ({COMM}) — it gets no "
               "connection while a member is live; adopt it or stop it")
    text = " ".join(rpctl.ok("status").split())
    assert warning in text, text

    (view,) = read_views()
    screen = History()
    snap = Snapshot(time=0.0, groups=[view])
    screen.update(snap)
    console = Console(file=io.StringIO(), width=200, height=40)
    console.print(render(snap, screen, 200, 40))
    assert warning in console.file.getvalue()

    got = scrape(GroupCollector(None, log=lambda line: None).collect())
    assert samples(got["rpctl_group_unmanaged_listeners"]) == {(("group", group["name"]),): 1.0}

    doctor = json.loads(rpctl.ok("doctor", "--json"))["checks"]
    (check,) = [c for c in doctor if c["name"] == f"group {group['name']}"]
    assert (check["ok"], check["warning"], check["detail"]) == (False, True, warning)


def test_no_unmanaged_listener_is_an_empty_list_and_no_warning(netns, rpctl, make_members):
    members = make_members()
    rpctl.ok(*members.register_args("a", members.add()))
    (group,) = json.loads(rpctl.ok("status", "--json"))["groups"]
    assert group["unmanaged"] == []
    assert "unmanaged" not in rpctl.ok("status")
    got = scrape(GroupCollector(None, log=lambda line: None).collect())
    assert samples(got["rpctl_group_unmanaged_listeners"]) == {(("group", group["name"]),): 0.0}
