"""cli/completion.py: the bash completion knows every command and option, and completes
group and member names from `rpctl status --json` (a stand-in rpctl on PATH here)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap

import pytest
from rpctl.cli.completion import completion_script, value_kind
from rpctl.cli.main import build_parser
from rpctl.cli.parser_tree import Option, read_parser

STATUS = {"groups": [
    {"name": "web", "members": [{"name": "worker-1"}, {"name": "worker-2"}]},
    {"name": "dns", "members": [{"name": "dns-1"}]},
]}


@pytest.fixture(scope="module")
def script(tmp_path_factory):
    path = tmp_path_factory.mktemp("completion") / "rpctl"
    path.write_text(completion_script(build_parser()))
    return path


@pytest.fixture
def complete(script, tmp_path):
    """complete("rpctl", "drain", "") -> what bash offers for the last word."""
    bash = shutil.which("bash")
    assert bash, "bash is missing"
    fake = tmp_path / "bin" / "rpctl"
    fake.parent.mkdir()
    calls = tmp_path / "calls"
    fake.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        echo "$@" >> {calls}
        cat <<'EOF'
        {json.dumps(STATUS)}
        EOF
        """))
    fake.chmod(0o755)
    (tmp_path / "conf.toml").write_text("")

    def run(*words: str) -> list[str]:
        program = (f"source {script}; COMP_WORDS=({' '.join(_quote(w) for w in words)}); "
                   f"COMP_CWORD={len(words) - 1}; _rpctl; printf '%s\\n' \"${{COMPREPLY[@]}}\"")
        env = dict(os.environ, PATH=f"{fake.parent}:{os.environ['PATH']}")
        done = subprocess.run([bash, "-c", program], capture_output=True, text=True, env=env, cwd=tmp_path,
                              check=True)
        return [w for w in done.stdout.splitlines() if w]

    run.calls = calls
    return run


def _quote(word: str) -> str:
    return "'" + word.replace("'", "'\\''") + "'"


def test_the_script_is_valid_bash(script):
    subprocess.run(["bash", "-n", str(script)], check=True)


def test_commands_and_every_option_of_each(complete):
    _, commands = read_parser(build_parser())
    assert complete("rpctl", "") == [c.name for c in commands]
    assert complete("rpctl", "dr") == ["drain"]
    assert complete("rpctl", "--") == ["--traceback", "--version", "--help"]
    for cmd in commands:
        offered = complete("rpctl", cmd.name, "-")
        for opt in cmd.options:
            assert set(opt.flags) <= set(offered), (cmd.name, opt.flags, offered)


def test_group_and_member_names_from_status(complete):
    assert complete("rpctl", "drain", "") == ["worker-1", "worker-2", "dns-1"]
    assert complete("rpctl", "drain", "--group", "") == ["web", "dns"]
    assert complete("rpctl", "undrain", "-g", "web", "w") == ["worker-1", "worker-2"]
    assert "status --json --group web" in complete.calls.read_text().splitlines()
    assert complete("rpctl", "drain", "worker-1", "") == []  # drain takes one name
    assert complete("rpctl", "restart", "worker-1", "") == ["worker-1", "worker-2", "dns-1"]
    assert complete("rpctl", "register", "") == []  # a new member's name: nothing to offer


def test_weights_offer_names_to_set(complete):
    assert complete("rpctl", "weights", "wor") == ["worker-1=", "worker-2="]
    assert complete("rpctl", "weights", "worker-1", "=", "") == []
    assert complete("rpctl", "weights", "worker-1", "=", "3", "d") == ["dns-1="]


def test_choices_files_and_commands(complete):
    assert complete("rpctl", "pin", "") == ["cpu", "rss", "off"]
    assert complete("rpctl", "discover", "--proto", "") == ["tcp", "udp"]
    assert complete("rpctl", "apply", "-c", "con") == ["conf.toml"]
    assert "bash" in complete("rpctl", "run", "-n", "2", "--", "bas")


def test_value_kinds():
    def opt(dest, flags=(), metavar="X", choices=(), nargs=None):
        return Option(flags, dest, metavar, "", choices, nargs, False)

    assert value_kind("drain", opt("name")) == "member"
    assert value_kind("register", opt("name")) == ""
    assert value_kind("weights", opt("assignments", nargs="*")) == "assignment"
    assert value_kind("status", opt("group", ("--group",), "G")) == "group"
    assert value_kind("apply", opt("config", ("-c", "--config"), "FILE")) == "file"
    assert value_kind("pin", opt("dev", ("--dev",), "IFACE")) == "interface"
    assert value_kind("pin", opt("mode", choices=("cpu", "off"))) == "choices"
    assert value_kind("run", opt("cmd", nargs="...")) == "command"
    assert value_kind("drain", opt("timeout", ("--timeout",), "TIMEOUT")) == ""
