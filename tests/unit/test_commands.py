"""cli/commands.py: the table of commands, and what running one imports.

`rpctl CMD ...` imports the module of CMD alone (cli/main.py builds the other
commands from the table's name and help line), so that a command pays for its own
imports: a command that only reads imports neither bcc nor another command's module,
and a --json one no rich.  Each command line runs in a fresh interpreter (sys.modules
is the evidence) with what it reads replaced by hand-built data: no privileges, no
bpffs.  tests/kernel/test_start_commands_without_bcc.py runs them on real groups.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
from rpctl.cli.commands import BY_NAME, COMMANDS, MODULES, command_word
from rpctl.cli.main import build_parser

REPO = Path(__file__).resolve().parents[2]

# Command lines that only read, run through to their output on hand-built data.
READS = [
    ("status",), ("status", "--json"),
    ("weights",), ("weights", "--json"),
    ("dashboard", "--frames", "1"),
    ("discover",), ("discover", "--port", "8080", "--json"),
]
# The other commands, and why they are not in READS (their `--help` is checked below).
NOT_READS = {
    "register": "writes", "unregister": "writes", "unload": "writes", "drain": "writes", "undrain": "writes",
    "adopt": "writes", "apply": "writes", "run": "writes", "restart": "writes", "rollout": "writes",
    "pin": "writes", "promote": "writes", "rollback": "writes", "cleanup": "writes", "serve": "writes", "demo": "writes (its own group)",
    "demo-worker": "reads nothing: a server of its own, until a signal",
    "doctor": "reads, and imports bcc on purpose: whether bcc imports is one of its checks",
    "metrics": "reads, but serves until a signal: its scrapes are test_exporter's",
}

# Runs `rpctl ARGV` with the read model (or discover) answering hand-built data, after
# SETUP (Python; empty but for the made-up case), and prints the exit status and
# every module then imported.
PROBE = """
import io, json, sys
exec(sys.argv[1])
stub = sys.argv[2]
if stub == "views":
    from rpctl.controller.read import views
    from tests.support.views import group_view
    views.read_views = lambda group=None, layout=None, with_queues=True: [group_view()]
    views.read_view = lambda group=None, layout=None, with_queues=True: group_view()
elif stub == "discover":
    from rpctl.controller.kernel import discover
    discover.discover = lambda port=None, proto=None: []
from rpctl.cli.common import Environment
from rpctl.cli.main import run
env = Environment(stdout=io.StringIO(), stderr=io.StringIO())
status = run(sys.argv[3:], env)
print(json.dumps({"status": status, "stderr": env.stderr.getvalue(), "modules": sorted(sys.modules)}))
"""


def stub_of(argv: tuple[str, ...]) -> str:
    """What a command line reads, replaced in the probe: the read model, discover, or nothing."""
    return {"discover": "discover"}.get(argv[0], "views" if argv[0] in ("status", "weights", "dashboard") else "")


def imported(argvs: list[tuple[str, ...]], setup: str = "") -> list[list[str]]:
    """The modules each command line imports, each run in an interpreter of its own (all at once)."""
    procs = [subprocess.Popen([sys.executable, "-c", PROBE, setup, stub_of(argv), *argv], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for argv in argvs]
    out = []
    for argv, proc in zip(argvs, procs):
        stdout, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 0, f"rpctl {' '.join(argv)}: {stderr}"
        report = json.loads(stdout)
        assert report["status"] == 0, f"rpctl {' '.join(argv)}: {report['stderr']}"
        out.append(report["modules"])
    return out


def strays(command: str, modules: list[str], json_only: bool = False) -> list[str]:
    """The modules of `modules` that running `command` must not import: bcc, the module of
    any other command, and (json_only) rich."""
    own = f"rpctl.cli.{BY_NAME[command].module}"
    other_commands = {f"rpctl.cli.{m}" for m in MODULES} - {own}
    return [m for m in modules if m.split(".")[0] == "bcc" or m in other_commands
            or (json_only and m.split(".")[0] == "rich")]


def test_every_command_is_a_read_or_says_why_not():
    assert {argv[0] for argv in READS} | set(NOT_READS) == set(BY_NAME)
    assert not {argv[0] for argv in READS} & set(NOT_READS)


def test_a_read_command_imports_no_bcc_and_no_other_command():
    for argv, modules in zip(READS, imported(READS)):
        assert not strays(argv[0], modules, json_only="--json" in argv), argv


def test_every_commands_help_imports_no_bcc_and_no_other_command():
    argvs = [(c.name, "--help") for c in COMMANDS] + [("--help",)]
    for argv, modules in zip(argvs, imported(argvs)):
        if argv == ("--help",):  # every command listed, none imported
            assert not [m for m in modules if m in {f"rpctl.cli.{m}" for m in MODULES} or m.startswith("bcc")]
        else:
            assert not strays(argv[0], modules), argv


def test_the_check_would_catch_what_it_looks_for():
    """A made-up command line that imports another command's module, bcc and rich is caught."""
    assert strays("status", ["json", "rpctl.cli.status_cmd", "rpctl.cli.members_cmd", "bcc", "bcc.table",
                             "rich.console"], json_only=True) == [
        "rpctl.cli.members_cmd", "bcc", "bcc.table", "rich.console"]
    setup = "import types; sys.modules['bcc'] = types.ModuleType('bcc'); import rpctl.cli.members_cmd"
    (modules,) = imported([("status", "--json")], setup=setup)
    assert strays("status", modules, json_only=True) == ["bcc", "rpctl.cli.members_cmd"]


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.mark.parametrize("module", MODULES)
def test_a_module_defines_the_commands_the_table_gives_it(module):
    first = next(c.name for c in COMMANDS if c.module == module)
    defined = {name: p.get_default("handler") for name, p in _subparsers(build_parser(full=(first,))).items()
               if p.get_default("handler") is not None}
    assert sorted(defined) == sorted(c.name for c in COMMANDS if c.module == module)
    assert {h.__module__ for h in defined.values()} == {f"rpctl.cli.{module}"}


@pytest.mark.parametrize("full", [(), *[(c.name,) for c in COMMANDS], ("bogus",)], ids=str)
def test_rpctl_help_lists_every_command_whichever_is_defined_in_full(full):
    assert build_parser(full=full).format_help() == build_parser().format_help()
    assert list(_subparsers(build_parser(full=full))) == [c.name for c in COMMANDS]


@pytest.mark.parametrize("argv, word", [
    ([], None), (["--help"], None), (["status", "--json"], "status"), (["--traceback", "weights", "w1=2"], "weights"),
    (["--version"], None), (["-h", "drain", "w1"], "drain"),
])
def test_command_word(argv, word):
    assert command_word(argv) == word
