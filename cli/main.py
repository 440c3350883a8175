"""rpctl: the operator's command line.

The commands are the table of cli/commands.py: each one's name, help line and
the module that defines it.  `rpctl CMD ...` imports the module of CMD alone
and lists the others by their name and help line, so that a command starts
with its own imports and no one else's (`rpctl status` needs no launcher,
no config parser and no rich for --json).  run() is the one place that turns
an exception into one line on stderr and an exit code (--traceback shows
the whole story); handlers never print errors or exit by themselves.
"""

from __future__ import annotations

import argparse
import functools
import gc
import importlib
import shlex
import sys
from typing import Callable, Collection, Optional, TextIO

from rpctl.controller.kernel import system_log

from .commands import BY_NAME, COMMANDS, MODULES, command_word
from .common import EXIT_CODES, PROG, Environment, Parser, examples, subcommands
from .logs import library_log
from .wording import error_line


def build_parser(out: Optional[TextIO] = None, full: Optional[Collection[str]] = None) -> argparse.ArgumentParser:
    """rpctl's parser.  The commands named in `full` (default: every one) are defined in full,
    with the other commands of their modules; the rest are their name and help line alone,
    enough for `rpctl --help`, and import nothing."""
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
    wanted = MODULES if full is None else {BY_NAME[c].module for c in full if c in BY_NAME}
    for module in MODULES:
        if module in wanted:
            importlib.import_module(f"{__package__}.{module}").add_commands(sub)
        else:
            for c in COMMANDS:
                if c.module == module:
                    sub.add_parser(c.name, help=c.help)
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
    parser: Callable[[Optional[TextIO], Collection[str]], argparse.ArgumentParser] = build_parser,
) -> int:
    """Run one command line; `parser(out, full)` builds the parser (rpctl's own by default),
    defining in full only the command the line names."""
    env = env or Environment()
    argv = list(sys.argv[1:] if argv is None else argv)
    command = command_word(argv)
    # --traceback is an option of rpctl itself: it stands before the command.
    traceback_wanted = "--traceback" in (argv[:argv.index(command)] if command is not None else argv)
    try:
        try:
            args = parser(env.stdout, () if command is None else (command,)).parse_args(argv)
            system_log.set_command(shlex.join([PROG, *argv]))  # who, in the audit line of each change it makes
            with library_log(env, args.log_prefix):
                status = int(args.handler(env, args))
        except SystemExit as e:  # --help and --version
            status = int(e.code or 0)
        env.stdout.flush()  # a reader gone away shows here, not in the interpreter's flush at exit
        return status
    except KeyboardInterrupt:
        env.err(f"{PROG}: interrupted")
        return 130
    except BaseException as e:
        if isinstance(e, BrokenPipeError) and _reader_gone(env.stdout):
            # `rpctl status --json | head`: the reader has what it wanted.  Quiet, with
            # the status of a process that SIGPIPE ended, as a C tool would have.
            return READER_GONE
        message, status = error_line(e)
        if traceback_wanted:
            import traceback

            traceback.print_exc(file=env.stderr)
        env.err(f"{PROG}: {message}")
        return int(status)


READER_GONE = 128 + 13  # 128 + SIGPIPE


def _reader_gone(out: TextIO) -> bool:
    """Whether `out` is a pipe whose reader has exited (poll says POLLERR on the write end
    of such a pipe).  Its descriptor is then pointed at /dev/null, so that the interpreter's
    flush at exit of what is still buffered does not fail a second time."""
    import os
    import select

    try:
        fd = out.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        if not any(events & select.POLLERR for _, events in poller.poll(0)):
            return False
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fd)
        os.close(devnull)
        return True
    except (OSError, ValueError, AttributeError):  # not a file descriptor (a test's StringIO)
        return False


def main() -> None:
    """The `rpctl` process: run() with what only a process that ends after one command may do."""
    # argparse asks gettext for each of its words ("usage: ", "options", ...) and gettext
    # looks for a catalogue on disk at every ask (eight stats a word under LANG=C.UTF-8):
    # 1.4 ms of every command, for an answer that cannot change while rpctl runs.
    argparse._ = functools.lru_cache(maxsize=None)(argparse._)
    status = run()
    # At exit the collector walks every object of every module the command imported, only
    # to free memory the exit frees anyway: 5-6 ms of `rpctl status`.  Frozen, it skips them.
    gc.freeze()
    sys.exit(status)


if __name__ == "__main__":
    main()
