"""rpctl: the operator's command line.

Handlers take (env, args), return an ExitStatus, and never exit by
themselves; run() is the one place that turns an exception into one line
on stderr and an exit code (--traceback shows the whole story).
"""

from __future__ import annotations

import argparse
import errno
import functools
import json
import re
import sys
from dataclasses import dataclass, field
from typing import Callable, Optional, TextIO

from rpctl.controller.errors import ExitStatus, InvalidInput, PermissionDenied, RpctlError, UsageError

PROG = "rpctl"


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


class _Parser(argparse.ArgumentParser):
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


def _examples(*lines: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


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
    """One progress line of a drain: what is queued on the member, and the
    port's handshakes (not the member's: sock_diag cannot tell)."""
    if handshakes is None:
        return f"{queued} queued"
    return f"{queued} queued, {handshakes} in handshake on the port"


# Handlers ---------------------------------------------------------------------


def cmd_register(env: Environment, args) -> ExitStatus:
    from rpctl.controller import group

    r = group.register(args.name, args.pid, args.fd, group=args.group, weight=args.weight, replace=args.replace)
    verb = "replaced the socket of" if r.replaced else "registered"
    created = f" (created group {r.group})" if r.created else ""
    env.out(f"{verb} {r.member} in group {r.group} at index {r.index}{created}")
    if r.created and not r.migration and r.proto == "tcp":
        env.err(
            f"rpctl: warning: group {r.group} has no listener migration (kernel older than 5.14, or RPCTL_MIGRATE=0): "
            "connections queued on a listener that closes are lost; drain and wait before closing one"
        )
    return ExitStatus.OK


def cmd_unregister(env: Environment, args) -> ExitStatus:
    from rpctl.controller import group

    name = group.unregister(args.name, group=args.group)
    env.out(f"unregistered {args.name} from group {name}: its socket gets no new connection while rpctl steers")
    return ExitStatus.OK


def cmd_unload(env: Environment, args) -> ExitStatus:
    from rpctl.controller import group

    name, detached = group.unload(group=args.group, force=args.force)
    how = "detached the program and " if detached else ""
    env.out(f"{how}removed group {name}: its sockets are back on the kernel's own selection")
    return ExitStatus.OK


def _one_view(args):
    from rpctl.controller.group import resolve_group
    from rpctl.controller.views import read_views

    return read_views(group=resolve_group(args.group), with_queues=None)[0]


def cmd_weights(env: Environment, args) -> ExitStatus:
    from rpctl.controller import group

    if args.assignments:
        group.set_weights(parse_assignments(args.assignments), group=args.group)
    view = _one_view(args)
    if args.json:
        from .views import weights_json

        env.out(json.dumps(weights_json(view), indent=2))
    else:
        from . import render

        console = env.console()
        console.print(render.weights_table(view, console.width))
    return ExitStatus.OK


def cmd_drain(env: Environment, args) -> ExitStatus:
    from rpctl.controller import drain, group

    name = group.set_draining(args.name, True, force=args.force, group=args.group)
    env.out(f"draining {args.name} in group {name}: it takes no new connection")
    if args.wait:
        drain.wait_drained(
            args.name,
            args.timeout,
            group=name,
            progress=lambda q, h: env.err(f"{args.name}: {drain_progress(q, h)}"),
        )
        env.out(f"{args.name} drained: its queue is empty")
    return ExitStatus.OK


def cmd_undrain(env: Environment, args) -> ExitStatus:
    from rpctl.controller import group

    name = group.set_draining(args.name, False, group=args.group)
    env.out(f"undrained {args.name} in group {name}: back at its weight")
    return ExitStatus.OK


def cmd_status(env: Environment, args) -> ExitStatus:
    from rpctl.controller.views import read_views

    views = read_views(group=args.group)
    if args.json:
        from .views import status_json

        env.out(json.dumps(status_json(views), indent=2))
        return ExitStatus.OK
    if not views:
        env.out("no group in this network namespace")
        return ExitStatus.OK
    from . import render

    console = env.console()
    for view in views:
        console.print(render.status_table(view, console.width))
    return ExitStatus.OK


def cmd_doctor(env: Environment, args) -> ExitStatus:
    from rpctl.controller import probe

    checks = probe.run_checks()
    if args.json:
        from .views import doctor_json

        env.out(json.dumps(doctor_json(checks), indent=2))
    else:
        from . import render

        env.console().print(render.doctor_table(checks))
    failed = [c for c in checks if not c.ok and not c.warning]
    return ExitStatus.UNSUPPORTED if failed else ExitStatus.OK


def cmd_demo(env: Environment, args) -> ExitStatus:
    from .demo import runner as demo

    return demo.run(env, args)


# Parser -------------------------------------------------------------------------


def _group_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--group", "-g", metavar="G", help="group name (may be left out when there is one group)")


def build_parser(out: Optional[TextIO] = None) -> argparse.ArgumentParser:
    parser = _Parser(
        out=out,
        prog=PROG,
        description="Steer the new connections of a SO_REUSEPORT group with eBPF: drain, weight and inspect workers.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_examples(
            "rpctl register worker-1 --pid 4242 --fd 3",
            "rpctl weights worker-1=3 worker-2=1",
            "rpctl drain worker-3 --wait --timeout 30",
            "rpctl status --json",
        )
        + "\n\nexit codes: 0 ok, 1 error, 2 usage, 3 not found, 4 invalid input, 5 permission,"
        "\n            6 unsupported (kernel, bpffs, headers), 7 pinned state mismatch, 8 timeout",
    )
    parser.add_argument("--traceback", action="store_true", help="show the full traceback of an error")
    parser.add_argument("--version", action=_VersionAction, help="show the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=functools.partial(_Parser, out=out))
    sub.required = True

    def add(name: str, handler: Callable, help: str, examples: list[str]) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name,
            help=help,
            description=help,
            epilog=_examples(*examples),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.set_defaults(handler=handler)
        return p

    p = add(
        "register",
        cmd_register,
        "make a worker's SO_REUSEPORT socket a member (the first member creates the group)",
        ["rpctl register worker-1 --pid 4242 --fd 3", "rpctl register canary --pid 4343 --fd 5 --weight 0 -g web"],
    )
    p.add_argument("name", help="member name, unique in the group")
    p.add_argument("--pid", type=int, required=True, help="process holding the socket")
    p.add_argument("--fd", type=int, required=True, help="the socket's fd number in that process")
    p.add_argument("--weight", type=int, default=1, help="weight (default 1, range 0..10000)")
    p.add_argument("--replace", action="store_true", help="swap the socket of an existing member of that name")
    _group_arg(p)

    p = add("unregister", cmd_unregister, "remove a member from its group", ["rpctl unregister worker-3"])
    p.add_argument("name")
    _group_arg(p)

    p = add(
        "unload",
        cmd_unload,
        "detach the program and remove the group's pinned state (sockets are left alone)",
        ["rpctl unload", "rpctl unload --group web"],
    )
    p.add_argument("--force", action="store_true", help="remove the state even when the program cannot be detached")
    _group_arg(p)

    p = add(
        "weights",
        cmd_weights,
        "show weights and shares, or set NAME=WEIGHT for some members (the others keep theirs)",
        ["rpctl weights", "rpctl weights worker-1=3 worker-2=1", "rpctl weights --json"],
    )
    p.add_argument("assignments", nargs="*", metavar="NAME=WEIGHT")
    p.add_argument("--json", action="store_true", help="print JSON")
    _group_arg(p)

    p = add(
        "drain",
        cmd_drain,
        "stop new connections to a member at once; --wait returns when its queue is empty",
        ["rpctl drain worker-3", "rpctl drain worker-3 --wait --timeout 30"],
    )
    p.add_argument("name")
    p.add_argument("--wait", action="store_true", help="wait until the member's queue is empty")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds --wait may take (default 60; exit 8 past it)")
    p.add_argument("--force", action="store_true", help="drain even the last live member")
    _group_arg(p)

    p = add("undrain", cmd_undrain, "bring a drained member back at its weight", ["rpctl undrain worker-3"])
    p.add_argument("name")
    _group_arg(p)

    p = add("status", cmd_status, "list groups and members", ["rpctl status", "rpctl status --group web --json"])
    p.add_argument("--json", action="store_true", help="print JSON")
    _group_arg(p)

    p = add(
        "doctor",
        cmd_doctor,
        "check kernel, privileges, bpffs, kernel headers and bcc, and say how to fix what is missing",
        ["rpctl doctor", "rpctl doctor --json"],
    )
    p.add_argument("--json", action="store_true", help="print JSON")

    p = add(
        "demo",
        cmd_demo,
        "run demo workers on one port under load, and drain, weigh and undrain them while showing shares",
        ["rpctl demo", "rpctl demo --port 18080 --workers 4"],
    )
    p.add_argument("--port", type=int, default=18080, help="TCP port on 127.0.0.1 (default 18080)")
    p.add_argument("--workers", type=int, default=4, help="number of demo workers (2..16, default 4)")
    p.add_argument("--step-seconds", type=float, default=3.0, help="load per demo step (default 3 s)")
    p.add_argument("--keep", action="store_true", help="keep group and workers running after the steps, until Ctrl-C")

    from .dashboard import add_commands as add_dashboard_commands
    from .discover_cmds import add_commands as add_discover_commands
    from .metrics_cmd import add_commands as add_metrics_commands
    from .pin_cmd import add_commands as add_pin_commands
    from .restart_cmd import add_commands as add_restart_commands
    from .run_cmd import add_commands as add_run_commands

    add_dashboard_commands(add)
    add_discover_commands(add)
    add_run_commands(add)
    add_restart_commands(add)
    add_metrics_commands(add)
    add_pin_commands(add)
    return parser


class _VersionAction(argparse.Action):
    """--version, looked up only when asked: importlib.metadata costs about
    15 ms, a tenth of a command's budget, and every command builds the parser."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        parser._print_message(f"{PROG} {_version()}\n")
        parser.exit()


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("rpctl")
    except Exception:
        return "unknown"


def _message(e: BaseException) -> tuple[str, ExitStatus]:
    if isinstance(e, RpctlError):
        return str(e), e.exit_status
    if isinstance(e, OSError) and e.errno in (errno.EPERM, errno.EACCES):
        return str(PermissionDenied(f"{e.strerror}: {e.filename or ''} (run as root)".strip())), ExitStatus.PERMISSION
    return f"unexpected error: {type(e).__name__}: {e}", ExitStatus.ERROR


def run(
    argv: Optional[list[str]] = None,
    env: Optional[Environment] = None,
    parser: Callable[[Optional[TextIO]], argparse.ArgumentParser] = build_parser,
) -> int:
    """Run one command line; `parser` builds the parser (rpctl's own by default)."""
    env = env or Environment()
    argv = list(sys.argv[1:] if argv is None else argv)
    # --traceback is an option of rpctl itself: it stands before the command.
    first_word = next((i for i, a in enumerate(argv) if not a.startswith("-")), len(argv))
    traceback_wanted = "--traceback" in argv[:first_word]
    try:
        args = parser(env.stdout).parse_args(argv)
        return int(args.handler(env, args))
    except SystemExit as e:  # --help and --version
        return int(e.code or 0)
    except KeyboardInterrupt:
        env.err(f"{PROG}: interrupted")
        return 130
    except BaseException as e:
        message, status = _message(e)
        if traceback_wanted:
            import traceback

            traceback.print_exc(file=env.stderr)
        env.err(f"{PROG}: {message}")
        return int(status)


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
