"""Unit tests need no privileges: `refuse_system` makes any path that would
reach bpffs, capabilities, the kernel checks or another process's fds fail."""

from __future__ import annotations

import pytest
from rpctl.controller.kernel import bpffs, probe, sockets

from tests.support.hostile import register_profiles

register_profiles()


class ReachedSystem(Exception):
    """A unit test got as far as bpffs, capabilities or another process's fds."""


@pytest.fixture
def refuse_system(monkeypatch):
    def refuse(*args, **kwargs):
        raise ReachedSystem("a unit test reached the real system")

    monkeypatch.setattr(bpffs, "bpffs_root", refuse)  # state, stale_state and probe all ask it
    monkeypatch.setattr(probe, "require_bpf_privileges", refuse)
    monkeypatch.setattr(probe, "require_kernel", refuse)
    monkeypatch.setattr(probe, "run_checks", refuse)
    monkeypatch.setattr(sockets, "take_socket", refuse)
    return refuse


@pytest.fixture
def no_group_read(refuse_system, monkeypatch):
    """read_views refuses too: a test of what the screen shows never reads a group."""
    from rpctl.controller.read import views

    monkeypatch.setattr(views, "read_views", refuse_system)


@pytest.fixture
def cli_without_system(refuse_system, monkeypatch):
    """A command run in-process (tests.support.cli.invoke) with no path to the system, and
    a console wide enough that nothing is cut."""
    monkeypatch.setenv("COLUMNS", "200")


@pytest.fixture
def groups_unreadable(refuse_system, monkeypatch):
    """No group can be read or resolved: a test replaces what its command may reach."""
    from rpctl.controller.read import views
    from rpctl.controller.store import group

    monkeypatch.setattr(views, "read_views", refuse_system)
    monkeypatch.setattr(views, "read_view", refuse_system)
    monkeypatch.setattr(group, "resolve_group", refuse_system)


@pytest.fixture
def syslog(tmp_path, monkeypatch):
    """The audit trail's lines, sent to a syslog socket the test binds instead of /dev/log."""
    from tests.support.syslog_socket import SyslogSocket

    sock = SyslogSocket.instead_of_dev_log(tmp_path, monkeypatch)
    yield sock
    sock.close()


@pytest.fixture
def own_name():
    """own_name(b"...") names this process (its main thread: /proc/PID/comm) for the test."""
    import ctypes

    pr_set_name, pr_get_name = 15, 16
    libc = ctypes.CDLL(None, use_errno=True)
    was = ctypes.create_string_buffer(16)
    libc.prctl(pr_get_name, was, 0, 0, 0)
    yield lambda name: libc.prctl(pr_set_name, ctypes.c_char_p(name), 0, 0, 0)
    libc.prctl(pr_set_name, was, 0, 0, 0)
