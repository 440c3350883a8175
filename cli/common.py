"""What every command module shares; it names no command (their table is commands.py).

A command module (cli/*_cmd.py) exports `add_commands(sub)`, which adds its
commands (those commands.py names it for) to the subparsers `sub` with
add_command(), and handlers `cmd_<verb>(env, args) -> ExitStatus` that write
through the Environment and never print or exit by themselves.  This module
imports no command module and nothing heavy (rich is imported by
Environment.console() only), because every command imports it.
"""

from __future__ import annotations

import argparse
import functools
import re
import sys
from dataclasses import dataclass, field
from typing import Callable, Optional, TextIO

from rpctl.controller.contract.errors import ExitStatus, InvalidInput, UsageError
from rpctl.controller.contract.refs import shown
from rpctl.controller.ops.config_defaults import DEFAULT_PATH  # not config: the parser imports no tomllib

from .commands import BY_NAME

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
    example_lines: list[str],
    description: Optional[str] = None,
    log_prefix: Optional[str] = None,
) -> argparse.ArgumentParser:
    """Add one command of the table (commands.py, where its one-line help is), a longer
    description if any, and examples (every command has some: a test holds each `--help`
    to it).  `log_prefix` is what the library's log lines start with on stderr while it
    runs (default "rpctl"; logs.library_log)."""
    help = BY_NAME[name].help
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


def config_option(p: argparse.ArgumentParser) -> None:
    """-c/--config FILE of the commands that read rpctl.toml."""
    p.add_argument("-c", "--config", metavar="FILE", default=DEFAULT_PATH,
                   help=f"the config file (default {DEFAULT_PATH})")


def json_option(p: argparse.ArgumentParser, help: str = "print JSON") -> None:
    p.add_argument("--json", action="store_true", help=help)


def prometheus_options(p: argparse.ArgumentParser, window: bool = False) -> None:
    """--prometheus URL and --match SELECTOR (and --window): read every host's groups through a
    Prometheus server that scrapes their `rpctl metrics` instead of this host's maps."""
    p.add_argument("--prometheus", metavar="URL",
                   help="read the groups of every host a Prometheus server scrapes (its HTTP API) "
                        "instead of this host's")
    p.add_argument("--match", metavar="SELECTOR",
                   help='with --prometheus: only these series, e.g. \'{instance=~"web-.*",group="api"}\'')
    if window:
        p.add_argument("--window", metavar="DURATION",
                       help="with --prometheus: observed shares and rates over this long (default 1m; "
                            "at least two scrape intervals)")


def group_options(p: argparse.ArgumentParser) -> None:
    """The options a command that may create a group takes (controller/store/options.py)."""
    p.add_argument(
        "--flow-affinity", action=argparse.BooleanOptionalAction, default=None,
        help="UDP: keep each flow on the member it was placed on while that member's socket lives "
             "(default: on; --no-flow-affinity when the group is created)",
    )
    p.add_argument("--flow-table-size", type=int, metavar="N", default=None,
                   help="UDP: flows the group's table remembers, a power of two "
                        "(default 65536, 1 MiB; set when the group is created)")
    p.add_argument("--flow-idle-timeout", type=float, metavar="SECONDS", default=None,
                   help="UDP: a flow silent this long is placed as new (default 30; set when the group is created)")
    p.add_argument("--quic", action="store_true", default=None,
                   help="UDP: route QUIC packets by the QUIC-LB server id of their connection id "
                        "(set when the group is created)")
    p.add_argument("--quic-server-id-length", type=int, metavar="N", default=None,
                   help="with --quic: bytes of a member's QUIC-LB server id (default 1, range 1..4)")
    p.add_argument("--balance", choices=("hash", "datagram"), default=None,
                   help="UDP: place by the hash of each flow's addresses and ports (hash, the default) or each "
                        "datagram at random by the weights (datagram: one sender's datagrams spread over the "
                        "members; no flow affinity or QUIC routing; set when the group is created)")


def group_options_of(args):
    """The GroupOptions of parsed group_options() flags (None for those not given)."""
    from rpctl.controller.store.options import GroupOptions

    return GroupOptions(args.flow_affinity, args.flow_table_size, args.flow_idle_timeout, args.quic,
                        args.quic_server_id_length, args.balance)


def port_number(text: str) -> int:
    """argparse type of a port: 1..65535."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"{port} is out of range 1..65535")
    return port


MAX_DIGITS = 18  # a weight or a CPU number is far shorter; int() refuses more than 4,300 digits


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
            raise InvalidInput(f"{what} of {shown(name)}: {value!r} is not a whole number")
        if len(value.lstrip("-")) > MAX_DIGITS:
            raise InvalidInput(f"{what} of {shown(name)}: a number of {len(value)} digits is out of range")
        if name in out:
            raise InvalidInput(f"{what}s: {shown(name)} is given twice")
        out[name] = int(value)
    return out


def drain_progress(queued: int, handshakes: Optional[int], flows: Optional[int] = None) -> str:
    """One progress line of a drain (`drain --wait`, restart, rollout): what is queued
    on the member, the port's handshakes (not the member's: sock_diag cannot tell),
    and the live UDP flows that still go to the member (None: no flow table)."""
    text = f"{queued} queued"
    if flows is not None:
        text += f", {flows} live flow{'' if flows == 1 else 's'}"
    if handshakes is not None:
        text += f", {handshakes} in handshake on the port"
    return text
