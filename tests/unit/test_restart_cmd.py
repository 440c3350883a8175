"""`rpctl restart` and `rollout`: signal names, the command line split at `--`, and options
refused before anything is touched."""

from __future__ import annotations

import signal

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from rpctl.cli.main import build_parser
from rpctl.cli.restart_cmd import parse_signal
from rpctl.controller.contract.errors import InvalidInput

from tests.support import hostile
from tests.support.cli import invoke


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
    status, _, err = invoke(argv)
    assert status == InvalidInput.exit_status
    lines = err.splitlines()
    assert len(lines) == 1 and message in lines[0], lines


@given(hostile.text | st.integers(-5, 70).map(str))
@example("²")  # "²".isdigit() holds, and int() refuses it
def test_any_signal_text_is_a_signal_or_refused_in_one_line(text):
    try:
        assert int(signal.Signals(parse_signal(text)))
    except InvalidInput as e:
        assert "\n" not in str(e).replace(repr(text), "")
