"""cli/adopt_cmd.py: `rpctl adopt`'s output, what it asks the library, its refusals; its parser's (and discover's)."""

from __future__ import annotations

import pytest
from rpctl.controller.contract.errors import ExitStatus, InvalidInput, NotFound, PermissionDenied
from rpctl.controller.ops import adopt
from rpctl.controller.store.options import GroupOptions

from tests.support.cli import invoke


def test_adopt_command_output_and_arguments(cli_without_system, monkeypatch):
    seen = {}
    R = adopt.AdoptResult

    def fake(port, **kw):
        seen.update(kw, port=port)
        return [
            R("nginx-11", 11, 5, "nginx", 7, "registered", "tcp-7080", 0, "tcp:127.0.0.1:7080", created=True),
            R("old", 12, 6, "nginx", 8, "already a member", "tcp-7080", 3, "tcp:127.0.0.1:7080"),
        ]

    monkeypatch.setattr(adopt, "adopt", fake)
    code, out, err = invoke(["adopt", "--port", 7080, "-g", "tcp-7080", "--name-format", "n{i}", "--proto", "tcp"])
    assert code == 0, err
    assert seen == {"port": 7080, "group": "tcp-7080", "name_format": "n{i}", "proto": "tcp", "addr": None,
                    "options": GroupOptions()}
    assert out.splitlines() == [
        "registered nginx-11 (pid 11 nginx fd 5) in group tcp-7080 at index 0",
        "old (pid 12 nginx fd 6): already a member of group tcp-7080",
        "adopted 1 listener of tcp:127.0.0.1:7080 into group tcp-7080 (created it); the program steers them",
    ]


@pytest.mark.parametrize(
    "error, status",
    [
        (NotFound("adopt port 7080: no TCP or UDP socket listens on port 7080"), ExitStatus.NOT_FOUND),
        (
            InvalidInput("adopt tcp:127.0.0.1:7080: x: socket does not have SO_REUSEPORT set"),
            ExitStatus.INVALID,
        ),
        (PermissionDenied("adopt port 7080: needs CAP_SYS_PTRACE"), ExitStatus.PERMISSION),
    ],
)
def test_adopt_refusals_are_one_line_and_an_exit_code(cli_without_system, monkeypatch, error, status):
    def fake(port, **kw):
        raise error

    monkeypatch.setattr(adopt, "adopt", fake)
    code, out, err = invoke(["adopt", "--port", 7080])
    assert (code, out) == (status, "")
    assert err == f"rpctl: {error}\n"


def test_command_lines_refused_by_the_parser(cli_without_system):
    for argv in (
        ["adopt"],
        ["adopt", "--port", "0"],
        ["adopt", "--port", "x"],
        ["discover", "--proto", "sctp"],
    ):
        code, out, err = invoke(argv)
        assert code == ExitStatus.USAGE, argv
        assert len(err.splitlines()) == 1
    code, out, _ = invoke(["adopt", "--help"])
    assert code == 0 and "rpctl adopt --port 8080" in out and "{comm}" in out
    code, out, _ = invoke(["discover", "--help"])
    assert code == 0 and "rpctl discover --port 8080 --json" in out
