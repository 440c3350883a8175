"""`rpctl register`, `unregister`, `unload` in-process: what each prints, and what it passes on.

The group functions are replaced here: no privileges, no bpffs, no other process's fds.
"""

from __future__ import annotations

import pytest
from rpctl.controller.contract.errors import ExitStatus, InvalidInput
from rpctl.controller.store import group
from rpctl.controller.store.group import Registration
from rpctl.controller.store.options import GroupOptions

from tests.support.cli import assert_one_error_line, invoke

pytestmark = pytest.mark.usefixtures("cli_without_system")


def test_register_creates_the_group_and_says_so(monkeypatch):
    calls = []

    def register(name, pid, fd, group=None, weight=1, replace=False, options=None, quic_server_id=None):
        calls.append((name, pid, fd, group, weight, replace, options, quic_server_id))
        return Registration("web", name, 0, created=True, replaced=False)

    monkeypatch.setattr(group, "register", register)
    status, out, err = invoke(["register", "worker-1", "--pid", "4242", "--fd", "3", "--weight", "2", "-g", "web"])
    assert (status, err) == (0, "")
    assert out == "registered worker-1 in group web at index 0 (created group web)\n"
    assert calls == [("worker-1", 4242, 3, "web", 2, False, GroupOptions(), None)]


def test_register_passes_the_group_options_given(monkeypatch):
    calls = []
    monkeypatch.setattr(group, "register", lambda name, pid, fd, options=None, **kw: calls.append(options) or
                        Registration("udp-53", name, 0, created=True, replaced=False, proto="udp"))
    argv = ["register", "w", "--pid", "1", "--fd", "3"]
    assert invoke([*argv, "--no-flow-affinity"])[0] == 0
    assert invoke([*argv, "--flow-table-size", "1024", "--flow-idle-timeout", "2.5"])[0] == 0
    assert calls == [GroupOptions(flow_affinity=False), GroupOptions(None, 1024, 2.5)]


def test_register_balance_reaches_the_library_and_its_refusals_are_one_line(monkeypatch):
    calls = []

    def register(name, pid, fd, options=None, **kw):
        calls.append(options.check())
        return Registration("udp-514", name, 0, created=True, replaced=False, proto="udp")

    monkeypatch.setattr(group, "register", register)
    argv = ["register", "w", "--pid", "1", "--fd", "3"]
    assert invoke([*argv, "--balance", "datagram"])[0] == 0
    assert calls == [GroupOptions(balance="datagram")]
    status, _, err = invoke([*argv, "--balance", "datagram", "--flow-affinity"])
    assert status == ExitStatus.INVALID
    line = assert_one_error_line(err)
    assert "flow affinity keeps a flow on its member: choose one (--balance)" in line, line
    status, _, err = invoke([*argv, "--balance", "random"])
    assert status == ExitStatus.USAGE and "invalid choice: 'random'" in err, err


def test_register_quic_options_reach_the_library_and_the_id_is_said(monkeypatch):
    calls = []

    def register(name, pid, fd, **kw):
        calls.append(kw)
        return Registration("udp-443", name, 1, created=True, replaced=False, proto="udp", quic_server_id="0a01")

    monkeypatch.setattr(group, "register", register)
    status, out, err = invoke(["register", "q", "--pid", "1", "--fd", "3", "--quic", "--quic-server-id-length", "2",
                               "--quic-server-id", "0a01"])
    assert (status, err) == (0, "")
    assert out == "registered q in group udp-443 at index 1 with QUIC server id 0a01 (created group udp-443)\n"
    assert calls[0]["quic_server_id"] == "0a01"
    assert calls[0]["options"] == GroupOptions(quic=True, quic_server_id_length=2)
    invoke(["register", "q", "--pid", "1", "--fd", "3", "--quic"])
    assert calls[1]["options"] == GroupOptions(quic=True) and calls[1]["quic_server_id"] is None


def test_register_quic_id_length_without_quic_is_refused_in_the_flags_words(monkeypatch):
    """The real library refuses it before it looks at any process."""
    status, out, err = invoke(["register", "q", "--pid", "1", "--fd", "3", "--quic-server-id-length", "2"])
    assert status == ExitStatus.INVALID and out == ""
    assert "a QUIC server id length goes with QUIC routing (--quic)" in assert_one_error_line(err)


def test_register_replace_and_no_migration_warning(monkeypatch):
    monkeypatch.setattr(group, "register", lambda name, pid, fd, **kw: Registration(
        "tcp-80", name, 3, created=True, replaced=True, migration=False, proto="tcp"))
    status, out, err = invoke(["register", "w", "--pid", "1", "--fd", "3", "--replace"])
    assert status == 0
    assert out.startswith("replaced the socket of w in group tcp-80 at index 3")
    assert "warning: group tcp-80 has no listener migration" in err
    # UDP has no accept queue to migrate: no warning.
    monkeypatch.setattr(group, "register", lambda name, pid, fd, **kw: Registration(
        "udp-53", name, 0, created=True, replaced=False, migration=False, proto="udp"))
    assert invoke(["register", "w", "--pid", "1", "--fd", "3"])[2] == ""


def test_register_refusal_is_one_line(monkeypatch):
    def register(*args, **kw):
        raise InvalidInput("register w: socket tcp:127.0.0.1:81 does not belong to group 'web'")

    monkeypatch.setattr(group, "register", register)
    status, out, err = invoke(["register", "w", "--pid", "1", "--fd", "3"])
    assert status == ExitStatus.INVALID and out == ""
    assert "does not belong to group 'web'" in assert_one_error_line(err)


def test_unregister_and_unload_say_what_they_did(monkeypatch):
    monkeypatch.setattr(group, "unregister", lambda name, group=None: "web")
    status, out, _ = invoke(["unregister", "worker-3"])
    assert status == 0
    assert out == "unregistered worker-3 from group web: its socket gets no new connection while rpctl steers\n"

    seen = []
    monkeypatch.setattr(group, "unload", lambda group=None, force=False: seen.append((group, force)) or ("web", True))
    status, out, _ = invoke(["unload", "-g", "web", "--force"])
    assert status == 0 and seen == [("web", True)]
    assert out == "detached the program and removed group web: its sockets are back on the kernel's own selection\n"
    monkeypatch.setattr(group, "unload", lambda group=None, force=False: ("web", False))
    assert invoke(["unload"])[1].startswith("removed group web")
