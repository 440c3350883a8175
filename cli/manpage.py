"""The man pages rpctl(8) and rpctl.toml(5), made from the parser and the key table.

rpctl(8) lists every command and option that `build_parser()` builds, with the
text of their --help; rpctl.toml(5) every key of GROUP_KEYS with its doc.
Both are made when the package is built (debian/rules), so they cannot
drift from the program they describe:

    python3 -m rpctl.cli.manpage --out DIR      # writes DIR/rpctl.8 and DIR/rpctl.toml.5

Not imported by the command line itself.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path
from typing import Iterable, Optional

from rpctl.controller.ops.config_defaults import DEFAULT_PATH
from rpctl.controller.ops.config_keys import GROUP_KEYS, REQUIRED

from .parser_tree import Command, Option, read_parser

__all__ = ["rpctl_page", "rpctl_toml_page", "roff_text", "write_pages", "main"]

EXAMPLE_FILE = """\
[[group]]
name = "web"
listen = "tcp:127.0.0.1:8080"
adopt = { comm = "nginx" }
weights = { "nginx-1" = 3 }
drain = ["nginx-2"]

[[group]]
name = "api"
listen = "tcp:127.0.0.1:9090"
run = { command = ["/srv/api", "--listen-fd", "3"], count = 4 }
"""


def roff_text(text: str) -> str:
    """Plain text made safe for roff: backslashes and hyphens escaped, no line starting with a control character."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line[:1] in (".", "'") else line for line in text.split("\n"))


def _literals(text: str) -> str:
    """roff_text() of a text whose `literals` are set in bold."""
    parts = re.split(r"`([^`]*)`", text)
    return "".join(roff_text(p) if i % 2 == 0 else "\\fB" + roff_text(p) + "\\fR" for i, p in enumerate(parts))


def _paragraphs(text: str) -> list[str]:
    """A --help text as roff: prose paragraphs filled; those laid out by hand (an indented line) kept as they are."""
    out = []
    for para in re.split(r"\n\s*\n", text.strip()):
        if not para.strip():
            continue
        if any(line[:1].isspace() for line in para.split("\n")):
            out.append(".PP\n.nf\n" + roff_text(para) + "\n.fi")
        else:
            out.append(".PP\n" + roff_text(" ".join(para.split())))
    return out


def _option_item(opt: Option) -> str:
    if opt.positional:
        head = f"\\fI{roff_text(opt.metavar or opt.dest.upper())}\\fR"
    else:
        value = f" \\fI{roff_text(opt.metavar)}\\fR" if opt.metavar else ""
        head = ", ".join(f"\\fB{roff_text(f)}\\fR{value}" for f in opt.flags)
    text = opt.help
    if opt.choices and not opt.positional and opt.metavar and "{" not in opt.metavar:
        text += f" (one of: {', '.join(opt.choices)})"
    return f".TP\n{head}\n{roff_text(text) or '.'}"


def _examples(lines: Iterable[str]) -> list[str]:
    lines = list(lines)
    if not lines:
        return []
    return [".PP\nExamples:\n.PP\n.RS 4\n.nf\n" + "\n".join(roff_text(x) for x in lines) + "\n.fi\n.RE"]


def _synopsis(line: str) -> str:
    """A usage line, filled, broken only between its options: `[--group G]` is one unbreakable word."""
    words = re.findall(r"\[[^\[\]]*\]|\{[^{}]*\}|\S+", line)
    return ".PP\n.ad l\n.nh\n\\fB" + " ".join(roff_text(w).replace(" ", "\\ ") for w in words) + "\\fR\n.hy\n.ad"


def _command_section(cmd: Command) -> list[str]:
    out = [f'.SS "{roff_text(cmd.name)}"', _synopsis(cmd.synopsis()),
           ".PP\n" + roff_text(cmd.help[:1].upper() + cmd.help[1:]) + "."]
    out += _paragraphs(cmd.description)
    out += [_option_item(o) for o in cmd.options]
    out += _examples(cmd.examples)
    if cmd.epilog:
        out += _paragraphs(cmd.epilog)
    return out


def _header(name: str, section: int, version: str, date: str, manual: str) -> str:
    return (f'.\\" Made by rpctl.cli.manpage from the program itself: do not edit.\n'
            f'.TH {name.upper()} {section} "{date}" "rpctl {version}" "{manual}"')


def _exit_codes(epilog: str) -> list[str]:
    """"exit codes: 0 ok, 1 error, ..." (rpctl --help) -> one .TP item per code."""
    text = " ".join(epilog.split()).split("exit codes:", 1)[-1]
    items = re.findall(r"(\d+) ([^,]+(?:\([^)]*\))?[^,]*)", text)
    return [f".TP\n.B {code}\n{roff_text(what.strip())}" for code, what in items]


def rpctl_page(parser: argparse.ArgumentParser, version: str, date: str) -> str:
    """rpctl(8): every command and option of `parser`."""
    top, commands = read_parser(parser)
    out = [
        _header("rpctl", 8, version, date, "System Administration"),
        ".SH NAME",
        "rpctl \\- " + roff_text("eBPF steering of SO_REUSEPORT groups: drain, weight and pin workers"),
        ".SH SYNOPSIS",
        ".B rpctl\n[\\fB\\-\\-traceback\\fR] \\fICOMMAND\\fR [\\fIOPTIONS\\fR]\n.br\n.B rpctl \\-\\-version",
        ".SH DESCRIPTION",
    ]
    out += _paragraphs(top.description)
    out.append(".PP\n" + roff_text(
        "The program and its maps are pinned in bpffs (/sys/fs/bpf/rpctl/), one folder per network namespace "
        "and group: steering goes on when no rpctl process runs, and every command picks the state up from "
        "there. Commands that change a group take its lock; read commands take none. Every read command "
        "has --json. Errors are one line on standard error and an exit code (below)."))
    out.append(".SH OPTIONS")
    out += [_option_item(o) for o in top.options]
    out.append(".SH COMMANDS")
    for cmd in commands:
        out += _command_section(cmd)
    out.append(".SH EXIT STATUS")
    out += _exit_codes(top.epilog)
    out.append(".SH EXAMPLES")
    out += _examples(top.examples)
    out += [
        ".SH ENVIRONMENT",
        ".TP\n.B BCC_KERNEL_SOURCE\n" + roff_text(
            "the kernel header tree bcc compiles the program against (default: the running kernel's, else "
            "one rpctl merges from Debian's linux-headers packages under /var/cache/rpctl/kernel-headers)"),
        ".TP\n.B RPCTL_PROGRAM_CACHE\n" + roff_text(
            "where compiled programs are kept (default /var/cache/rpctl/programs)"),
        ".TP\n.B NOTIFY_SOCKET\n" + roff_text(
            "serve tells its service manager READY=1, RELOADING=1 and STOPPING=1 through it"),
        ".SH FILES",
        f".TP\n.I {roff_text(DEFAULT_PATH)}\n" + roff_text(
            "the groups of apply and serve; see rpctl.toml(5)"),
        ".TP\n.I /sys/fs/bpf/rpctl/\n" + roff_text(
            "the pinned state: netns<cookie>/<group>/ holds a group's program, socket array, tables and counters"),
        ".TP\n.I /var/cache/rpctl/\n" + roff_text(
            "compiled programs and the merged kernel header tree; safe to delete"),
        ".SH SEE ALSO",
        ".BR rpctl.toml (5),\n.BR bpftool (8),\n.BR systemctl (1)",
    ]
    return "\n".join(out) + "\n"


def rpctl_toml_page(version: str, date: str) -> str:
    """rpctl.toml(5): every key of a [[group]] table."""
    out = [
        _header("rpctl.toml", 5, version, date, "File Formats"),
        ".SH NAME",
        "rpctl.toml \\- " + roff_text("the SO_REUSEPORT groups rpctl apply and rpctl serve keep"),
        ".SH SYNOPSIS",
        f".I {roff_text(DEFAULT_PATH)}",
        ".SH DESCRIPTION",
        ".PP\n" + _literals(
            "A TOML file of `[[group]]` tables, one per group of this network namespace. `rpctl apply` makes "
            "the groups what the file says, once; `rpctl serve` (the rpctl service) keeps them that way as servers "
            "reload, and rereads the file on SIGHUP (`systemctl reload rpctl`). A file with no group is "
            "valid: serve then idles and says so."),
        ".PP\n" + _literals(
            "Each group has exactly one of `adopt` (its members are the listeners of a running server) and "
            "`run` (rpctl launches the members). A file that does not parse, an unknown key, a wrong type, "
            "a duplicate `name` or `listen`, or a value out of range is refused as a whole with one line "
            "naming the file, the line, the group and the key, exit code 4, and nothing changes."),
        ".SH KEYS",
    ]
    for key, spec in GROUP_KEYS.items():
        required = " (required)" if key in REQUIRED else ""
        out.append(f".TP\n.B {roff_text(key)}{roff_text(required)}\n{_literals(spec.doc)}")
    out += [
        ".SH EXAMPLE",
        ".PP\n.nf\n.RS 4\n" + roff_text(EXAMPLE_FILE.rstrip("\n")) + "\n.RE\n.fi",
        ".SH SEE ALSO",
        ".BR rpctl (8)",
    ]
    return "\n".join(out) + "\n"


def _build_date() -> str:
    """The date of the pages: SOURCE_DATE_EPOCH's (a reproducible build), else today."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    return time.strftime("%Y-%m-%d", time.gmtime(int(epoch) if epoch else None))


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rpctl")
    except PackageNotFoundError:
        return "unknown"


def write_pages(out_dir: Path, version: Optional[str] = None, date: Optional[str] = None) -> list[Path]:
    """Write rpctl.8 and rpctl.toml.5 into `out_dir`; returns their paths."""
    from .main import build_parser

    version = version or _version()
    date = date or _build_date()
    out_dir.mkdir(parents=True, exist_ok=True)
    pages = {"rpctl.8": rpctl_page(build_parser(), version, date), "rpctl.toml.5": rpctl_toml_page(version, date)}
    written = []
    for name, text in pages.items():
        path = out_dir / name
        path.write_text(text)
        written.append(path)
    return written


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m rpctl.cli.manpage", description="write rpctl(8) and rpctl.toml(5)")
    p.add_argument("--out", required=True, type=Path, help="the folder to write them to")
    args = p.parse_args(argv)
    for path in write_pages(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
