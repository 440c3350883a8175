"""The commands and options of rpctl's parser, read back as plain data.

The man page (cli/manpage.py) and the bash completion (cli/completion.py)
are made from what `build_parser()` builds, so they cannot drift from the
command line.  argparse keeps its subcommands and actions in attributes it
does not document; this is the one module that reads them.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Optional

__all__ = ["Command", "Option", "read_parser"]


@dataclass(frozen=True)
class Option:
    """One option (`flags` set) or positional argument (`flags` empty) of a command."""

    flags: tuple[str, ...]      # ("--group", "-g"); () for a positional argument
    dest: str                   # argparse's name of the value ("group", "names", "cmd")
    metavar: Optional[str]      # what the value is called ("G", "FILE"); None: a flag with no value
    help: str
    choices: tuple[str, ...]    # the values it takes, when argparse knows them
    nargs: object               # argparse's nargs (None, "?", "*", "+", argparse.REMAINDER, 0)
    required: bool

    @property
    def positional(self) -> bool:
        return not self.flags

    @property
    def takes_value(self) -> bool:
        return self.metavar is not None

    def synopsis(self) -> str:
        """As a usage line writes it: `--pid PID`, `[--json]`, `NAME`, `[NAME ...]`, `-- CMD ...`."""
        if self.positional:
            word = self.metavar or self.dest.upper()
            text = {
                "?": f"[{word}]",
                "*": f"[{word} ...]",
                "+": f"{word} [{word} ...]",
                argparse.REMAINDER: word,  # run's metavar says it all: "-- CMD ..."
            }.get(self.nargs, word)  # type: ignore[arg-type]
            return text
        if self.metavar is None and all(f.startswith("--") for f in self.flags):
            text = " | ".join(self.flags)  # --flow-affinity | --no-flow-affinity
        else:
            text = self.long_flag + ("" if self.metavar is None else f" {self.metavar}")
        return text if self.required else f"[{text}]"

    @property
    def long_flag(self) -> str:
        """--config of (-c, --config); the only flag when there is no long one."""
        return next((f for f in self.flags if f.startswith("--")), self.flags[0])


@dataclass(frozen=True)
class Command:
    """One command of rpctl (or rpctl itself, name ""): its one line, its text, options, examples."""

    name: str
    help: str
    description: str            # the text of its --help between usage and options, without `help`
    options: tuple[Option, ...]
    examples: tuple[str, ...]   # the command lines of its "examples:" epilog
    epilog: str                 # what the epilog says besides the examples
    usage: Optional[str] = None  # the command's own usage line, when argparse's cannot say it

    def synopsis(self) -> str:
        if self.usage:
            return self.usage
        words = ["rpctl"] + ([self.name] if self.name else [])
        return " ".join(words + [o.synopsis() for o in self.options])


def _metavar(action: argparse.Action) -> Optional[str]:
    if action.nargs == 0:
        return None
    if action.metavar is not None:
        return action.metavar if isinstance(action.metavar, str) else " ".join(action.metavar)
    if action.choices is not None and not action.option_strings:
        return "{" + ",".join(str(c) for c in action.choices) + "}"
    return action.dest.upper()


def _option(action: argparse.Action) -> Option:
    choices = tuple(str(c) for c in action.choices) if action.choices is not None else ()
    return Option(
        flags=tuple(action.option_strings),
        dest=action.dest,
        metavar=_metavar(action),
        help=(action.help or "").strip(),
        choices=choices,
        nargs=action.nargs,
        required=bool(action.required) or not action.option_strings and action.nargs not in ("?", "*"),
    )


def _split_epilog(epilog: Optional[str]) -> tuple[tuple[str, ...], str]:
    """("examples:\\n  a\\n  b\\n\\nrest") -> (("a", "b"), "rest")."""
    examples: list[str] = []
    rest: list[str] = []
    in_examples = False
    for line in (epilog or "").splitlines():
        if line.strip() == "examples:":
            in_examples = True
        elif in_examples and line.startswith("  "):
            examples.append(line.strip())
        else:
            in_examples = False
            rest.append(line)
    return tuple(examples), "\n".join(rest).strip()


def _command(name: str, help: str, parser: argparse.ArgumentParser) -> Command:
    description = (parser.description or "").strip()
    if help and description.startswith(help):
        description = description[len(help):].strip()
    options = tuple(
        _option(a) for a in parser._actions
        if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)) and a.help != argparse.SUPPRESS
    )
    examples, epilog = _split_epilog(parser.epilog)
    # A usage set by hand (restart's "[-- CMD ...]") is kept, in one line and without -h.
    usage = " ".join(parser.usage.replace("[-h] ", "").split()) if parser.usage else None
    return Command(name, help, description, options, examples, epilog, usage)


def read_parser(parser: argparse.ArgumentParser) -> tuple[Command, tuple[Command, ...]]:
    """rpctl itself (its own options, name "") and its commands, in the order `rpctl --help` lists them."""
    top = _command("", "", parser)
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    commands = []
    for sub in subs:
        helps = {choice.dest: choice.help or "" for choice in sub._choices_actions}
        for name, sub_parser in sub.choices.items():
            commands.append(_command(name, helps.get(name, ""), sub_parser))
    return top, tuple(commands)
