"""Running rpctl in-process, as a unit test reads it: exit status, stdout, stderr."""

from __future__ import annotations

import io

from rpctl.cli.common import Environment
from rpctl.cli.main import run
from rpctl.controller.read import views as read_model


def invoke(argv: list[str]) -> tuple[int, str, str]:
    env = Environment(stdout=io.StringIO(), stderr=io.StringIO())
    status = run(argv, env)
    return status, env.stdout.getvalue(), env.stderr.getvalue()


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
