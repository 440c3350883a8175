"""cli/main.py: every command on the parser and in `--help`, bad command lines,
and the one place that turns an exception into one line and an exit code."""

from __future__ import annotations

import argparse
import errno
import re

import pytest
from rpctl.cli.main import build_parser
from rpctl.controller.contract.errors import ExitStatus, NotFound
from rpctl.controller.read import views as read_model
from rpctl.controller.store import group

from tests.support.cli import assert_one_error_line, explode, invoke
from tests.support.errors import ERROR_CLASSES

pytestmark = pytest.mark.usefixtures("cli_without_system")


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


SUBCOMMANDS = sorted(_subparsers())


def test_parser_has_every_command():
    assert set(SUBCOMMANDS) >= {
        "register", "unregister", "unload", "weights", "drain", "undrain", "status", "doctor", "demo", "metrics",
    }


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_subcommand_help_ends_with_examples(capsys, command):
    status, out, err = invoke([command, "--help"])
    # argparse prints help on sys.stdout, not env.stdout: read both.
    text = out + capsys.readouterr().out
    assert status == 0
    assert err == ""
    assert f"usage: rpctl {command}" in text
    assert "examples:" in text
    examples = text.rstrip("\n").split("examples:\n")[-1].splitlines()
    assert examples, f"{command} --help has an empty examples section"
    for line in examples:
        assert line.startswith(f"  rpctl {command}"), f"{command} --help: {line!r} is not an example"


def test_top_level_help_lists_every_exit_code(capsys):
    status, out, err = invoke(["--help"])
    text = out + capsys.readouterr().out
    assert status == 0 and err == ""
    assert "examples:" in text
    for command in SUBCOMMANDS:
        assert command in text
    codes = text.split("exit codes:", 1)[1]
    listed = {int(n): what for n, what in re.findall(r"(\d+) ([a-z][a-z ]*)", codes)}
    assert set(listed) == {int(s) for s in ExitStatus}
    assert listed[0].startswith("ok") and listed[2].startswith("usage") and listed[8].startswith("timeout")


def test_help_goes_to_the_environment(capsys):
    status, out, _ = invoke(["status", "--help"])
    capsys.readouterr()
    assert status == 0
    assert "examples:" in out


@pytest.mark.parametrize(
    "argv, says",
    [
        ([], "required: COMMAND"),
        (["bogus"], "invalid choice: 'bogus'"),
        (["register", "w1", "--fd", "3"], "required: --pid"),
        (["register", "w1", "--pid", "x", "--fd", "3"], "argument --pid: invalid int value: 'x'"),
        (["status", "--bogus"], "unrecognized arguments: --bogus"),
        (["weights", "--json", "--group"], "argument --group/-g: expected one argument"),
        (["drain", "w1", "--timeout", "soon"], "invalid float value: 'soon'"),
    ],
)
def test_bad_command_line_exits_2_with_one_line(argv, says):
    status, out, err = invoke(argv)
    assert status == ExitStatus.USAGE == 2
    assert out == ""
    line = assert_one_error_line(err)
    assert says in line
    assert line.endswith("--help)")


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
def test_error_maps_to_its_exit_status(monkeypatch, cls):
    def set_weights(weights, group=None):
        raise cls("set weights: boom")

    monkeypatch.setattr(group, "set_weights", set_weights)
    status, out, err = invoke(["weights", "worker-1=2"])
    assert status == cls.exit_status
    assert out == ""
    assert err == "rpctl: set weights: boom\n"


@pytest.mark.parametrize("code", [errno.EPERM, errno.EACCES])
def test_permission_oserror_exits_5(monkeypatch, code):
    def views(group=None):
        raise OSError(code, "Operation not permitted", "/sys/fs/bpf/rpctl")

    monkeypatch.setattr(read_model, "read_views", views)
    status, _, err = invoke(["status"])
    assert status == ExitStatus.PERMISSION == 5
    line = assert_one_error_line(err)
    assert "/sys/fs/bpf/rpctl" in line and "run as root" in line


def test_unexpected_exception_exits_1(monkeypatch):
    explode(monkeypatch, RuntimeError("kaboom"))
    status, out, err = invoke(["status"])
    assert status == ExitStatus.ERROR == 1
    assert out == ""
    assert err == "rpctl: unexpected error: RuntimeError: kaboom\n"


def test_traceback_option_adds_the_traceback(monkeypatch):
    explode(monkeypatch, RuntimeError("kaboom"))
    status, _, err = invoke(["--traceback", "status"])
    assert status == 1
    lines = err.splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert "RuntimeError: kaboom" in lines
    assert lines[-1] == "rpctl: unexpected error: RuntimeError: kaboom"
    assert any("cmd_status" in line for line in lines)


def test_traceback_option_also_for_rpctl_errors(monkeypatch):
    explode(monkeypatch, NotFound("no group 'web' in this network namespace"))
    status, _, err = invoke(["--traceback", "status", "-g", "web"])
    assert status == 3
    assert err.startswith("Traceback (most recent call last):")
    assert err.splitlines()[-1] == "rpctl: no group 'web' in this network namespace"


def test_interrupt_exits_130(monkeypatch):
    explode(monkeypatch, KeyboardInterrupt())
    status, _, err = invoke(["status"])
    assert status == 130
    assert err == "rpctl: interrupted\n"


def test_traceback_is_an_option_of_rpctl_itself():
    status, _, err = invoke(["status", "--traceback"])
    assert status == ExitStatus.USAGE
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def _listed_commands(help_text: str) -> list[str]:
    """The commands `rpctl --help` lists under COMMAND: each line indented by four spaces."""
    section = help_text.split("\n  COMMAND\n", 1)[1].split("\n\n", 1)[0]
    return [line.split()[0] for line in section.splitlines() if re.match(r"^    \S", line)]


def test_every_command_that_rpctl_help_lists_answers_help_with_examples():
    """As an operator runs it: `rpctl --help`, then `rpctl CMD --help` for each command it lists."""
    import subprocess
    import sys

    rpctl = [sys.executable, "-m", "rpctl.cli"]
    top = subprocess.run([*rpctl, "--help"], capture_output=True, text=True, timeout=60)
    assert top.returncode == 0, top.stderr
    listed = _listed_commands(top.stdout)
    assert sorted(listed) == SUBCOMMANDS, "rpctl --help must list every command the parser has"
    for command in listed:
        done = subprocess.run([*rpctl, command, "--help"], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and done.stderr == "", (command, done.stderr)
        examples = done.stdout.rstrip("\n").split("\nexamples:\n")[1].splitlines()
        assert examples and all(e.startswith(f"  rpctl {command}") for e in examples), (command, examples)


def test_the_command_line_is_who_the_audit_trail_names(groups_unreadable):
    from rpctl.controller.kernel import system_log

    try:
        invoke(["weights", "web-1=3", "--group", "my web"])
        assert system_log.actor().command == "rpctl weights web-1=3 --group 'my web'"
    finally:
        system_log.set_command(None)


def test_a_reader_that_went_away_ends_the_command_quietly():
    """`rpctl status --json | head`: the pipe's reader exits before rpctl has written all;
    rpctl stops with SIGPIPE's status and no error line (a C tool would die of SIGPIPE)."""
    import io
    import os

    from rpctl.cli.common import Environment
    from rpctl.cli.main import READER_GONE, run

    read_end, write_end = os.pipe()
    os.close(read_end)
    stderr = io.StringIO()
    with os.fdopen(write_end, "w") as stdout:
        assert run(["--help"], Environment(stdout=stdout, stderr=stderr)) == READER_GONE
        stdout.write("what is still buffered goes nowhere\n")
    assert stderr.getvalue() == ""


def test_a_broken_pipe_elsewhere_is_an_error_line():
    """A broken pipe that is not stdout's (a socket rpctl talks to) stays an error."""
    import io

    from rpctl.cli.common import Environment
    from rpctl.cli.main import run

    def parser(out, full):
        p = argparse.ArgumentParser()
        p.set_defaults(handler=lambda env, args: explode(BrokenPipeError(errno.EPIPE, "Broken pipe")), log_prefix=None)
        return p

    stdout, stderr = io.StringIO(), io.StringIO()
    assert run([], Environment(stdout=stdout, stderr=stderr), parser=parser) == 1
    assert_one_error_line(stderr.getvalue())
