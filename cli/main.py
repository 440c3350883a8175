"""rpctl: the operator's command line.

The commands are the modules of COMMAND_MODULES, one per command group,
each adding its commands to the parser.  run() is the one place that turns
an exception into one line on stderr and an exit code (--traceback shows
the whole story); handlers never print errors or exit by themselves.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Callable, Optional, TextIO

from rpctl.controller.kernel import system_log

from . import (
    adopt_cmd,
    apply_cmd,
    cleanup_cmd,
    dashboard_cmd,
    demo_cmd,
    discover_cmd,
    doctor_cmd,
    members_cmd,
    metrics_cmd,
    pin_cmd,
    restart_cmd,
    run_cmd,
    serve_cmd,
    status_cmd,
    steering_cmd,
)
from .common import EXIT_CODES, PROG, Environment, Parser, examples, subcommands
from .logs import library_log
from .wording import error_line

# In the order `rpctl --help` lists their commands.
COMMAND_MODULES = (
    members_cmd,    # register, unregister, unload
    steering_cmd,   # weights, drain, undrain
    status_cmd,     # status
    doctor_cmd,     # doctor
    cleanup_cmd,    # cleanup
    demo_cmd,       # demo
    dashboard_cmd,  # dashboard
    discover_cmd,   # discover
    adopt_cmd,      # adopt
    apply_cmd,      # apply
    run_cmd,        # run
    restart_cmd,    # restart, rollout
    metrics_cmd,    # metrics
    serve_cmd,      # serve
    pin_cmd,        # pin
)


def build_parser(out: Optional[TextIO] = None) -> argparse.ArgumentParser:
    parser = Parser(
        out=out,
        prog=PROG,
        description="Steer the new connections of a SO_REUSEPORT group with eBPF: drain, weight and inspect workers.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=examples(
            "rpctl register worker-1 --pid 4242 --fd 3",
            "rpctl weights worker-1=3 worker-2=1",
            "rpctl drain worker-3 --wait --timeout 30",
            "rpctl status --json",
        )
        + "\n\n"
        + EXIT_CODES,
    )
    parser.add_argument("--traceback", action="store_true", help="show the full traceback of an error")
    parser.add_argument("--version", action=_VersionAction, help="show the version and exit")
    sub = subcommands(parser, out)
    for module in COMMAND_MODULES:
        module.add_commands(sub)
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
        system_log.set_command(shlex.join([PROG, *argv]))  # who, in the audit line of each change it makes
        with library_log(env, args.log_prefix):
            return int(args.handler(env, args))
    except SystemExit as e:  # --help and --version
        return int(e.code or 0)
    except KeyboardInterrupt:
        env.err(f"{PROG}: interrupted")
        return 130
    except BaseException as e:
        message, status = error_line(e)
        if traceback_wanted:
            import traceback

            traceback.print_exc(file=env.stderr)
        env.err(f"{PROG}: {message}")
        return int(status)


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
