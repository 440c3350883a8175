"""The audit trail on the real kernel: each command that changes steering leaves one
line per change in the system log (a syslog socket the test binds instead of
/dev/log), naming the group, what changed old -> new, and who; read commands
leave none."""

from __future__ import annotations

import os
import pwd

import pytest
from rpctl.controller.kernel import system_log
from rpctl.controller.store.state import Layout

from tests.support.netns import drop_netns, namespace_with_a_group
from tests.support.syslog_socket import SyslogSocket

pytestmark = pytest.mark.kernel


@pytest.fixture
def syslog(tmp_path, monkeypatch):
    sock = SyslogSocket.instead_of_dev_log(tmp_path, monkeypatch)
    yield sock
    sock.close()
    system_log.set_command(None)


def test_every_change_is_one_line_with_who_and_old_to_new(netns, rpctl, make_members, syslog):
    members = make_members()
    socks = [members.add() for _ in range(3)]
    for i, s in enumerate(socks):
        rpctl.ok(*members.register_args(f"w{i + 1}", s))
    group = f"tcp-{members.port}"
    entries = syslog.entries()
    assert [e.fields["change"] for e in entries] == [
        f"created (tcp:127.0.0.1:{members.port}); + w1 (pid {os.getpid()} fd {socks[0].fileno()}, weight 1, active)",
        f"+ w2 (pid {os.getpid()} fd {socks[1].fileno()}, weight 1, active)",
        f"+ w3 (pid {os.getpid()} fd {socks[2].fileno()}, weight 1, active)",
    ]
    first = entries[0].fields
    assert (entries[0].ident, entries[0].pid) == ("rpctl", os.getpid())
    assert first["group"] == group and first["netns"] == Layout().netns
    assert (first["uid"], first["user"], first["pid"]) == ("0", pwd.getpwuid(0).pw_name, str(os.getpid()))
    assert first["command"] == f"rpctl register w1 --pid {os.getpid()} --fd {socks[0].fileno()} --weight 1"

    rpctl.ok("weights", "w1=3", "w2=2")
    rpctl.ok("drain", "w3")
    rpctl.ok("undrain", "w3")
    rpctl.ok("pin", "cpu", "--map", "w1=0,w2=1")
    rpctl.ok("pin", "off")
    rpctl.ok("unregister", "w2")
    assert syslog.changes() == [
        (group, "w1 weight 1 -> 3; w2 weight 1 -> 2"),
        (group, "w3 active -> draining"),
        (group, "w3 draining -> active"),
        (group, "pin weighted -> cpu (w1=0 w2=1)"),
        (group, "pin cpu (w1=0 w2=1) -> weighted"),
        (group, "- w2"),
    ]

    # Reads change nothing and say nothing; a write that changes nothing says nothing either.
    for argv in (["status"], ["status", "--json"], ["weights"], ["discover", "--port", members.port],
                 ["cleanup", "--dry-run"], ["doctor"]):
        rpctl(*argv)
    rpctl.ok("weights", "w1=3")
    assert syslog.entries() == []

    rpctl.ok("unload")
    (entry,) = syslog.entries()
    assert entry.fields["change"] == "unloaded: program detached, the sockets are back on the kernel's own selection"
    assert entry.fields["command"] == "rpctl unload"


def test_cleanup_names_the_dead_namespace_and_its_groups(netns, rpctl, syslog):
    name = f"rpctl-audit{os.getpid()}"
    try:
        folder = namespace_with_a_group(name)
    finally:
        drop_netns(name)
    syslog.entries()  # the group made there
    rpctl.ok("cleanup")
    netns_id = os.path.basename(folder)
    assert ("tcp-7000", f"removed the state of dead network namespace {netns_id}") in syslog.changes()
