"""controller/kernel/system_log.py: the audit line, who it names, and the socket it goes to."""

from __future__ import annotations

import os
import pwd
import socket
import sys
import threading

import pytest
from rpctl.controller.kernel import system_log

from tests.support.syslog_socket import FIELD_RE


@pytest.fixture
def command():
    """The command set by a test is forgotten after it."""
    yield system_log.set_command
    system_log.set_command(None)


def test_a_line_reaches_the_socket_as_syslog_user_notice_from_rpctl(syslog, command):
    command("rpctl weights web-1=3")
    assert system_log.send(system_log.line("web", "web-1 weight 1 -> 3", netns="netns4097"))
    (entry,) = syslog.entries()
    assert (entry.priority, entry.ident, entry.pid) == (13, "rpctl", os.getpid())
    assert entry.fields == {
        "group": "web", "change": "web-1 weight 1 -> 3", "uid": str(os.getuid()),
        "user": pwd.getpwuid(os.getuid()).pw_name, "pid": str(os.getpid()),
        "command": "rpctl weights web-1=3", "netns": "netns4097",
    }


def test_who_is_the_command_set_at_start_else_the_process_argv(command):
    command("serve")
    assert system_log.actor().command == "serve"
    command(None)
    assert system_log.actor().command == " ".join(sys.argv) or system_log.actor().command == "python"


def test_values_with_spaces_quotes_or_nothing_are_quoted_and_read_back():
    text = system_log.logfmt([("a", "plain"), ("b", 'say "hi" \\ there'), ("c", ""), ("d", "x=y")])
    assert text.startswith("a=plain b=")
    assert dict((k, v) for k, v in FIELD_RE.findall(text))["c"] == '""'
    from tests.support.syslog_socket import Entry

    assert Entry(13, "rpctl", 1, text).fields == {"a": "plain", "b": 'say "hi" \\ there', "c": "", "d": "x=y"}


def test_a_very_long_change_is_cut_not_refused(syslog):
    system_log.send(system_log.line("web", "x" * 50_000))
    (entry,) = syslog.entries()
    assert entry.fields["change"].endswith(system_log.CUT)
    assert len(entry.fields["change"]) == system_log.MAX_CHANGE


def test_no_socket_sends_nothing_and_says_so_without_an_error(tmp_path, monkeypatch):
    monkeypatch.setattr(system_log, "SOCKET", str(tmp_path / "nothing-here"))
    assert system_log.send("group=web change=x") is False
    # A socket file nobody reads any more (the daemon died): refused, not raised.
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    dead.bind(str(tmp_path / "dead"))
    dead.close()
    assert system_log.send("group=web change=x", path=str(tmp_path / "dead")) is False


def test_a_stream_syslog_socket_gets_the_line_newline_ended(tmp_path):
    path = str(tmp_path / "stream")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    got = []

    def accept():
        conn, _ = server.accept()
        with conn:
            got.append(conn.makefile("rb").read())

    t = threading.Thread(target=accept)
    t.start()
    assert system_log.send("group=web change=x", path=path)
    t.join(5)
    server.close()
    assert got and got[0].endswith(b"rpctl[%d]: group=web change=x\n" % os.getpid())
