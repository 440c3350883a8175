"""`rpctl register`, `unregister`, `unload` in-process: what each prints, and what it passes on.

The group functions are replaced here: no privileges, no bpffs, no other process's fds.
"""

from __future__ import annotations

import pytest
from rpctl.controller import group
from rpctl.controller.errors import ExitStatus, InvalidInput
from rpctl.controller.group import Registration
from rpctl.controller.options import GroupOptions
from tests.support.cli import assert_one_error_line, invoke

pytestmark = pytest.mark.usefixtures("cli_without_system")


def test_register_creates_the_group_and_says_so(monkeypatch):
    calls = []

    def register(name, pid, fd, group=None, weight=1, replace=False, options=None):
        calls.append((name, pid, fd, group, weight, replace, options))
        return Registration("web", name, 0, created=True, replaced=False)

    monkeypatch.setattr(group, "register", register)
    status, out, err = invoke(["register", "worker-1", "--pid", "4242", "--fd", "3", "--weight", "2", "-g", "web"])
    assert (status, err) == (0, "")
    assert out == "registered worker-1 in group web at index 0 (created group web)\n"
    assert calls == [("worker-1", 4242, 3, "web", 2, False, GroupOptions())]


def test_register_passes_the_group_options_given(monkeypatch):
    calls = []
    monkeypatch.setattr(group, "register", lambda name, pid, fd, options=None, **kw: calls.append(options) or
                        Registration("udp-53", name, 0, created=True, replaced=False, proto="udp"))
    argv = ["register", "w", "--pid", "1", "--fd", "3"]
    assert invoke([*argv, "--no-flow-affinity"])[0] == 0
    assert invoke([*argv, "--flow-table-size", "1024", "--flow-idle-timeout", "2.5"])[0] == 0
    assert calls == [GroupOptions(flow_affinity=False), GroupOptions(None, 1024, 2.5)]


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
