"""Pure parts of `rpctl restart` / `rollout`: environment parsing, batches,
batch limits, signal names and the command-line split at `--`."""

from __future__ import annotations

import io
import os
import signal

import pytest

from rpctl.cli.common import Environment
from rpctl.cli.main import build_parser, run
from rpctl.cli.restart_cmd import parse_signal
from rpctl.controller.errors import InvalidInput
from rpctl.controller.restart import batches, check_batch, is_launched, parse_environ


def test_parse_environ():
    raw = b"PATH=/bin\0RPCTL_MEMBER=worker-2\0EMPTY=\0A=b=c\0junk\0"
    assert parse_environ(raw) == {b"PATH": b"/bin", b"RPCTL_MEMBER": b"worker-2", b"EMPTY": b"", b"A": b"b=c"}


def test_is_launched_needs_the_name_and_its_own_listen_pid(monkeypatch):
    # This very process was not started by rpctl run.
    assert not is_launched(os.getpid(), "worker-1")
    assert not is_launched(2**22 + 12345, "worker-1")  # no such process


def test_batches():
    assert batches(["a", "b", "c", "d", "e"], 2) == [["a", "b"], ["c", "d"], ["e"]]
    assert batches(["a"], 3) == [["a"]]


@pytest.mark.parametrize("batch, live, message", [
    (0, 4, "at least 1"),
    (True, 4, "at least 1"),
    ("2", 4, "at least 1"),
    (4, 4, "use at most 3"),
    (1, 1, "none would serve"),
])
def test_check_batch_refuses(batch, live, message):
    with pytest.raises(InvalidInput, match=message):
        check_batch(batch, live)


def test_check_batch_accepts():
    assert check_batch(3, 4) == 3
    assert check_batch(1, 2) == 1


@pytest.mark.parametrize("text, num", [("TERM", 15), ("sigterm", 15), ("15", 15), ("QUIT", 3), ("INT", 2)])
def test_parse_signal(text, num):
    assert parse_signal(text) == num == int(signal.Signals(num))


@pytest.mark.parametrize("text", ["", "NOPE", "999", "-1"])
def test_parse_signal_refuses(text):
    with pytest.raises(InvalidInput, match="not a signal"):
        parse_signal(text)


@pytest.mark.parametrize("argv, names, cmd, hook", [
    (["restart", "w1"], ["w1"], [], False),
    (["restart", "w1", "w2", "--", "/srv/api", "--listen", "x"], ["w1", "w2"], ["/srv/api", "--listen", "x"], False),
    (["restart", "w1", "--hook", "--", "systemctl", "restart", "a"], ["w1"], ["systemctl", "restart", "a"], True),
    (["restart", "--hook", "w1", "--", "sh", "-c", "x -- y"], ["w1"], ["sh", "-c", "x -- y"], True),
])
def test_restart_command_line_splits_at_the_first_double_dash(argv, names, cmd, hook):
    args = build_parser().parse_args(argv)
    assert (args.names, args.cmd, args.hook) == (names, cmd, hook)


def test_rollout_command_line():
    args = build_parser().parse_args(["rollout", "--batch", "2", "--", "x", "--", "y"])
    assert (args.batch, args.cmd) == (2, ["x", "--", "y"])


@pytest.mark.parametrize("argv, message", [
    (["restart", "w1", "--hook"], "--hook: give the command"),
    (["restart", "w1", "--signal", "BOGUS"], "not a signal"),
    (["restart", "w1", "--drain-timeout", "0"], "must be more than 0"),
    (["rollout", "--stop-timeout", "-1"], "must be more than 0"),
])
def test_bad_options_fail_with_one_line_before_touching_anything(argv, message):
    env = Environment(stdout=io.StringIO(), stderr=io.StringIO())
    assert run(argv, env) == InvalidInput.exit_status
    lines = env.stderr.getvalue().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
