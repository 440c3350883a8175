"""`rpctl restart` and `rpctl rollout`: restart members without losing a connection."""

from __future__ import annotations

import argparse
import json
import signal

from rpctl.controller.contract.errors import ExitStatus, InvalidInput

from .common import Environment, add_command, drain_progress, group_option, json_option

STEPS = """\
Each member is drained, its queue waited empty, its process stopped (--signal,
SIGKILL after --stop-timeout), its replacement started and registered under the
same name (same weight and counters) and undrained.  Requests still in their
handshake move to the other members (the program chooses, on kernels >= 5.14).

Members started by `rpctl run` need no command: their launcher starts the
replacement on the same socket.  For other members give, after --, the command
that starts the replacement (rpctl runs it in its own session, output to
--output), or with --hook the command that restarts the member by itself
(systemctl restart app@$RPCTL_MEMBER): rpctl runs it, waits for it, then
registers the listener that appeared on the port.  $RPCTL_MEMBER in the
command is replaced by the member's name.

A failed step stops everything there; the member is left drained (the others
serve) and the error says so."""


def parse_signal(text: str) -> int:
    """TERM, SIGTERM or 15 -> signal number."""
    t = text.strip().upper()
    if t.isascii() and t.isdigit():
        num = int(t)
        if num in {int(s) for s in signal.Signals}:
            return num
    else:
        name = t if t.startswith("SIG") else "SIG" + t
        if name in signal.Signals.__members__:
            return int(signal.Signals[name])
    raise InvalidInput(f"--signal {text!r}: not a signal name or number (TERM, INT, QUIT, 15)")


def _positive(option: str, value: float) -> float:
    if not value > 0:
        raise InvalidInput(f"{option} {value:g}: must be more than 0 seconds")
    return value


def _options(args):
    from rpctl.controller.ops.restart import RestartOptions

    cmd = list(args.cmd)
    if args.hook and not cmd:
        raise InvalidInput("--hook: give the command that restarts the member after --")
    return RestartOptions(
        command=cmd or None,
        hook=args.hook,
        signal=parse_signal(args.signal),
        drain_timeout=_positive("--drain-timeout", args.drain_timeout),
        stop_timeout=_positive("--stop-timeout", args.stop_timeout),
        start_timeout=_positive("--start-timeout", args.start_timeout),
        output=args.output,
    )


def _report(env, args, done) -> ExitStatus:
    if args.json:
        env.out(json.dumps([
            {"name": r.name, "old_pid": r.old_pid, "new_pid": r.new_pid, "launched": r.launched,
             "left_drained": r.left_drained}
            for r in done
        ], indent=2))
        return ExitStatus.OK
    for r in done:
        tail = "; left drained as before" if r.left_drained else ""
        env.out(f"restarted {r.name}: pid {r.old_pid} -> {r.new_pid}{tail}")
    return ExitStatus.OK


def _progress(env: Environment, command: str):
    """A draining member's queue, as `drain --wait` shows it, on the command's stderr."""
    return lambda name, queued, handshakes, flows: env.err(
        f"rpctl {command}: {name}: {drain_progress(queued, handshakes, flows)}"
    )


def cmd_restart(env: Environment, args) -> ExitStatus:
    from rpctl.controller.ops import restart

    done = restart.restart(args.names, group=args.group, opts=_options(args), progress=_progress(env, "restart"))
    return _report(env, args, done)


def cmd_rollout(env: Environment, args) -> ExitStatus:
    from rpctl.controller.ops import restart

    done = restart.rollout(group=args.group, batch=args.batch, opts=_options(args),
                           progress=_progress(env, "rollout"))
    return _report(env, args, done)


def _common(p: argparse.ArgumentParser) -> None:
    group_option(p)
    p.add_argument("--signal", default="TERM", metavar="SIG", help="signal that stops a member (default TERM)")
    p.add_argument("--drain-timeout", type=float, default=30.0, metavar="S",
                   help="seconds for a drained member's queue to empty (default 30; exit 8 past it)")
    p.add_argument("--stop-timeout", type=float, default=10.0, metavar="S",
                   help="seconds between the signal and SIGKILL (default 10)")
    p.add_argument("--start-timeout", type=float, default=30.0, metavar="S",
                   help="seconds for the replacement to be listening (default 30; exit 8 past it)")
    p.add_argument("--hook", action="store_true",
                   help="CMD restarts the member itself; rpctl sends no signal")
    p.add_argument("--output", default="/dev/null", metavar="FILE",
                   help="where a replacement started from CMD writes stdout and stderr (default /dev/null)")
    json_option(p, help="print the result as JSON")
    p.usage = p.format_usage().split(":", 1)[1].strip() + " [-- CMD ...]"
    _split_command(p)


def _split_command(p: argparse.ArgumentParser) -> None:
    """Everything after the first `--` is CMD, whatever it looks like.

    argparse cannot express "NAME... [options] -- CMD..." (a REMAINDER after
    a positional swallows the options that follow it), so the subparser
    parses what comes before `--` and CMD is the rest, untouched."""
    parse = p.parse_known_args

    def parse_known_args(args=None, namespace=None):
        args = list(args or [])
        cmd: list[str] = []
        if "--" in args:
            cut = args.index("--")
            args, cmd = args[:cut], args[cut + 1:]
        ns, rest = parse(args, namespace)
        ns.cmd = cmd
        return ns, rest

    p.parse_known_args = parse_known_args


def add_commands(sub) -> None:
    p = add_command(
        sub,
        "restart",
        cmd_restart,
        [
            "rpctl restart worker-3                       # started by rpctl run",
            "rpctl restart api-2 -- /srv/api --listen 127.0.0.1:8080",
            "rpctl restart api-2 --hook -- systemctl restart 'api@$RPCTL_MEMBER'",
        ],
        description=STEPS,
        log_prefix="rpctl restart",
    )
    p.add_argument("names", nargs="+", metavar="NAME", help="members restarted together")
    _common(p)

    p = add_command(
        sub,
        "rollout",
        cmd_rollout,
        [
            "rpctl rollout --group web",
            "rpctl rollout --group web --batch 2 --drain-timeout 60",
            "rpctl rollout --hook -- systemctl restart 'api@$RPCTL_MEMBER'",
        ],
        description=STEPS,
        log_prefix="rpctl rollout",
    )
    p.add_argument("--batch", type=int, default=1, metavar="K",
                   help="members restarted at a time (default 1; fewer than the live members)")
    _common(p)
