"""Running rpctl in-process, as a test reads it: exit status, stdout, stderr.

`invoke` is the one way tests run a command line in-process (unit tests import it, the kernel
tests' `rpctl` fixture calls it); `captured` is the Environment it runs in, for the few tests that
must read a command's output while it still runs."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import NamedTuple

from rpctl.cli.common import Environment
from rpctl.cli.main import run
from rpctl.controller.read import views as read_model


class Outcome(NamedTuple):
    """What a command leaves: unpacks as (status, stdout, stderr)."""

    status: int
    stdout: str
    stderr: str


def captured() -> Environment:
    """An Environment whose stdout and stderr are StringIO (read back with .getvalue()); not a terminal."""
    return Environment(stdout=io.StringIO(), stderr=io.StringIO())


def invoke(argv: Sequence[object]) -> Outcome:
    """`rpctl ARGV` in-process.  Each word is str()-ed, so that ports, pids and paths can be given as
    they are.  The console width is the terminal's, or COLUMNS: set it (monkeypatch.setenv, or the
    unit tests' `cli_without_system` fixture) where a test reads wide tables."""
    env = captured()
    status = run([str(word) for word in argv], env)
    return Outcome(status, env.stdout.getvalue(), env.stderr.getvalue())


def assert_one_error_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {stderr!r}"
    assert lines[0].startswith("rpctl: "), lines[0]
    return lines[0]


def explode(monkeypatch, exc: BaseException) -> None:
    """Reading any group raises `exc`: how a command words what reading can raise."""

    def views(group=None):
        raise exc

    monkeypatch.setattr(read_model, "read_views", views)
