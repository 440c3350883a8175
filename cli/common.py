"""What every command module shares, and nothing that names a command.

A command module (cli/*_cmd.py) exports `add_commands(sub)`, which adds its
commands to the subparsers `sub` with add_command(), and handlers
`cmd_<verb>(env, args) -> ExitStatus` that write through the Environment
and never print or exit by themselves.  This module imports no command
module and nothing heavy (rich is imported by Environment.console() only),
because every command builds the whole parser.
"""

from __future__ import annotations

import argparse
import functools
import re
import sys
from dataclasses import dataclass, field
from typing import Callable, Optional, TextIO

from rpctl.controller.errors import ExitStatus, InvalidInput, UsageError

PROG = "rpctl"

EXIT_CODES = (
    "exit codes: 0 ok, 1 error, 2 usage, 3 not found, 4 invalid input, 5 permission,"
    "\n            6 unsupported (kernel, bpffs, headers), 7 pinned state mismatch, 8 timeout"
)

Handler = Callable[["Environment", argparse.Namespace], ExitStatus]


@dataclass
class Environment:
    """Where a command reads and writes; tests pass StringIO objects."""

    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)

    def console(self):
        from rich.console import Console

        return Console(file=self.stdout, highlight=False)

    def out(self, text: str = "") -> None:
        print(text, file=self.stdout, flush=True)

    def err(self, text: str) -> None:
        print(text, file=self.stderr, flush=True)


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line in one line, exit 2, and
    prints --help and --version to the Environment's stdout."""

    def __init__(self, *args, out: Optional[TextIO] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.out = out

    def _print_message(self, message: str, file: Optional[TextIO] = None) -> None:
        if message:
            (self.out or file or sys.stdout).write(message)

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see {self.prog} --help)")


def subcommands(parser: argparse.ArgumentParser, out: Optional[TextIO]) -> argparse._SubParsersAction:
    """The subparsers every command module adds its commands to."""
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=functools.partial(Parser, out=out))
    sub.required = True
    return sub


def examples(*lines: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def add_command(
    sub: argparse._SubParsersAction,
    name: str,
    handler: Handler,
    help: str,
    example_lines: list[str],
    description: Optional[str] = None,
    log_prefix: Optional[str] = None,
) -> argparse.ArgumentParser:
    """Add one command: its one-line help, a longer description if any, and examples
    (every command has some: a test holds each `--help` to it).  `log_prefix` is what
    the library's log lines start with on stderr while it runs (default "rpctl";
    logs.library_log)."""
    p = sub.add_parser(
        name,
        help=help,
        description=help if description is None else f"{help}\n\n{description}",
        epilog=examples(*example_lines),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(handler=handler, log_prefix=log_prefix or PROG)
    return p


# Shared options ---------------------------------------------------------------------


GROUP_HELP = "group name (may be left out when there is one group)"


def group_option(p: argparse.ArgumentParser, help: str = GROUP_HELP) -> None:
    p.add_argument("--group", "-g", metavar="G", help=help)


def quic_options_arguments(p: argparse.ArgumentParser) -> None:
    """--quic and --quic-server-id-length: a UDP group's QUIC routing, fixed when it is created."""
    p.add_argument("--quic", action="store_true",
                   help="UDP group created here: route QUIC packets by the server id of their connection id")
    p.add_argument("--quic-server-id-length", type=int, metavar="N",
                   help="with --quic: bytes of a QUIC-LB server id (default 1, range 1..4)")


def quic_options(args: argparse.Namespace):
    """The QuicOptions the command line asks for; None when it asks nothing (the group's own)."""
    from rpctl.controller.quic import DEFAULT_SERVER_ID_LENGTH, QuicOptions

    if args.quic_server_id_length is not None and not args.quic:
        raise UsageError("--quic-server-id-length goes with --quic")
    if not args.quic:
        return None
    return QuicOptions(True, args.quic_server_id_length or DEFAULT_SERVER_ID_LENGTH)


def json_option(p: argparse.ArgumentParser, help: str = "print JSON") -> None:
    p.add_argument("--json", action="store_true", help=help)


def port_number(text: str) -> int:
    """argparse type of a port: 1..65535."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"{port} is out of range 1..65535")
    return port


def parse_assignments(items: list[str], what: str = "weight") -> dict[str, int]:
    """NAME=WEIGHT arguments -> {name: weight}; refuses anything else.
    `what` names the value in messages ("CPU" for `pin cpu --map NAME=CPU`)."""
    out: dict[str, int] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise InvalidInput(f"{what}s: {item!r} is not NAME={what.upper()}")
        value = value.strip()
        if not re.fullmatch(r"-?[0-9]+", value):
            raise InvalidInput(f"{what} of {name}: {value!r} is not a whole number")
        if name in out:
            raise InvalidInput(f"{what}s: {name} is given twice")
        out[name] = int(value)
    return out


def drain_progress(queued: int, handshakes: Optional[int]) -> str:
    """One progress line of a drain (`drain --wait`, restart, rollout): what is queued
    on the member, and the port's handshakes (not the member's: sock_diag cannot tell)."""
    if handshakes is None:
        return f"{queued} queued"
    return f"{queued} queued, {handshakes} in handshake on the port"
