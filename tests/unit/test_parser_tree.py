"""cli/parser_tree.py: rpctl's parser read back as commands and options."""

from __future__ import annotations

import argparse

from rpctl.cli.main import build_parser
from rpctl.cli.parser_tree import read_parser


def _argparse_commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_every_command_and_option_of_the_parser_is_read_back():
    parser = build_parser()
    top, commands = read_parser(parser)
    by_argparse = _argparse_commands(parser)
    assert [c.name for c in commands] == list(by_argparse)
    for cmd in commands:
        flags = {f for o in cmd.options for f in o.flags}
        want = {f for a in by_argparse[cmd.name]._actions for f in a.option_strings} - {"-h", "--help"}
        assert flags == want, cmd.name
        assert cmd.help and cmd.examples, cmd.name
    assert {f for o in top.options for f in o.flags} == {"--traceback", "--version"}


def test_what_a_command_says_is_its_help_text():
    _, commands = read_parser(build_parser())
    pin = next(c for c in commands if c.name == "pin")
    mode = next(o for o in pin.options if o.positional)
    assert mode.choices == ("cpu", "rss", "off") and mode.required
    assert all(e.startswith("rpctl pin") for e in pin.examples)
    assert not pin.description.startswith(pin.help)  # the one line is not repeated
    group = next(o for o in pin.options if o.dest == "group")
    assert group.flags == ("--group", "-g") and group.metavar == "G" and not group.required


def test_a_synopsis_writes_each_kind_of_argument():
    parser = argparse.ArgumentParser(prog="rpctl")
    p = parser.add_subparsers().add_parser("x", help="a made-up command")
    p.add_argument("name")
    p.add_argument("more", nargs="*")
    p.add_argument("--flag", action="store_true")
    p.add_argument("--on", action=argparse.BooleanOptionalAction)
    p.add_argument("-c", "--config", metavar="FILE")
    p.add_argument("--need", required=True)
    _, (cmd,) = read_parser(parser)
    assert cmd.help == "a made-up command"
    assert cmd.synopsis() == "rpctl x NAME [MORE ...] [--flag] [--on | --no-on] [--config FILE] --need NEED"


def test_a_usage_set_by_hand_is_kept():
    _, commands = read_parser(build_parser())
    restart = next(c for c in commands if c.name == "restart")
    assert restart.synopsis().startswith("rpctl restart ") and restart.synopsis().endswith("[-- CMD ...]")
    assert "-h" not in restart.synopsis().split()
