"""rpctl.cli.wording: one line and an exit code for any exception, flags and commands worded
by the command line.  The library's own text (str(error)) names no flag.  No privileges."""

from __future__ import annotations

import ast
import errno
import os
import re
import socket
from pathlib import Path

import pytest
from rpctl.cli.wording import COMMANDS, FLAGS, cli_word, error_line, error_text
from rpctl.controller.contract.errors import ExitStatus, InvalidInput, RpctlError, UsageError
from rpctl.controller.contract.refs import Call, Param
from rpctl.controller.kernel import rss
from rpctl.controller.kernel.discover import Holder, Listener
from rpctl.controller.ops import adopt, launcher
from rpctl.controller.ops.restart import check_batch
from rpctl.controller.store import group
from rpctl.controller.store.state import Layout
from rpctl.controller.tables import pin_table

from tests.support.endpoints import endpoint

CONTROLLER = Path(group.__file__).parents[1]  # rpctl.controller, every layer below it


# The line and the exit code ---------------------------------------------------------------


@pytest.mark.parametrize("cls", [RpctlError, *RpctlError.__subclasses__()], ids=lambda c: c.__name__)
def test_an_rpctl_error_keeps_its_text_and_exit_status(cls):
    assert error_line(cls("set weights: boom")) == ("set weights: boom", cls.exit_status)


@pytest.mark.parametrize("code", [errno.EPERM, errno.EACCES])
def test_a_permission_oserror_is_permission_denied(code):
    line, status = error_line(OSError(code, "Operation not permitted", "/sys/fs/bpf/rpctl"))
    assert (line, status) == ("Operation not permitted: /sys/fs/bpf/rpctl (run as root)", ExitStatus.PERMISSION)


def test_anything_else_is_unexpected_and_names_its_type():
    assert error_line(RuntimeError("kaboom")) == ("unexpected error: RuntimeError: kaboom", ExitStatus.ERROR)
    assert error_line(OSError(errno.ENOENT, "No such file"))[0].startswith("unexpected error: FileNotFoundError: ")
    assert error_line(KeyError("x")) == ("unexpected error: KeyError: 'x'", ExitStatus.ERROR)


def test_the_line_is_one_line():
    assert error_line(InvalidInput("first\nsecond"))[0] == "first second"
    assert error_line(ValueError("a\nb"))[0] == "unexpected error: ValueError: a b"


# References: the library's words and the command line's ----------------------------------------


@pytest.mark.parametrize(
    "ref, library, cli",
    [
        (Param("group"), "group", "--group"),
        (Param("replace", flag=True), "replace=True", "--replace"),
        (Param("force", flag=True), "force=True", "--force"),
        (Param("name_format"), "name_format", "--name-format"),
        (Param("name_format", "Launcher"), "name_format", "--name"),
        (Param("count", "Launcher"), "count", "-n"),
        (Param("argv", "Launcher"), "in argv", "after --"),
        (Param("command", "RestartOptions"), "as RestartOptions.command", "after --"),
        (Param("hook", "RestartOptions", flag=True), "RestartOptions.hook=True", "--hook"),
        (Param("mapping"), "mapping", "--map"),
        (Param("dev", "read_device"), "dev", "--dev"),
        (Call("unload", group="web"), "`unload(group=web)`", "`rpctl unload --group web`"),
        (Call("register", "NAME", pid="PID", fd="FD"), "`register(NAME, pid=PID, fd=FD)`",
         "`rpctl register NAME --pid PID --fd FD`"),
        (Call("register", "w1", pid="PID", fd="FD", replace=True), "`register(w1, pid=PID, fd=FD, replace=True)`",
         "`rpctl register w1 --pid PID --fd FD --replace`"),
        (Call("set_draining", "w1", True), "`set_draining(w1, True)`", "`rpctl drain w1`"),
        (Call("set_draining", "w1", False), "`set_draining(w1, False)`", "`rpctl undrain w1`"),
        (Call("pin_cpu"), "`pin_cpu()`", "`rpctl pin cpu`"),
        (Call("unload", group="web", force=True), "`unload(group=web, force=True)`",
         "`rpctl unload --group web --force`"),
        (Call("explain_rss", Call("read_device", "eth0")), "`explain_rss(read_device(eth0))`",
         "`rpctl pin rss --dev eth0 --explain`"),
    ],
)
def test_a_reference_in_both_wordings(ref, library, cli):
    e = InvalidInput("x: ", ref, ".")
    assert str(e) == f"x: {library}."
    assert error_line(e) == (f"x: {cli}.", ExitStatus.INVALID)


def test_what_the_table_does_not_know_keeps_the_librarys_words():
    assert cli_word(Param("timeout")) == "timeout"
    assert cli_word(Call("publish", 1)) == "`publish(1)`"
    assert cli_word(Call("unload", "web", "extra")) == "`unload(web, extra)`"  # not the table's arguments


def _refs_in_the_library() -> set[tuple[str, object]]:
    """("param", (op, name)) and ("call", op) of every Param(...) and Call(...) written in
    controller/ (a Call that is another Call's argument is that call's business)."""
    found = set()
    for path in CONTROLLER.rglob("*.py"):
        calls = [n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Call)
                 and isinstance(n.func, ast.Name) and n.func.id in ("Param", "Call")]
        inner = {id(a) for n in calls if n.func.id == "Call" for a in n.args}
        for node in calls:
            consts = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
            if node.func.id == "Param" and consts:
                found.add(("param", (consts[1] if len(consts) > 1 else "", consts[0])))
            elif consts and id(node) not in inner:
                found.add(("call", consts[0]))
    return found


def test_the_table_words_every_reference_the_library_makes():
    refs = _refs_in_the_library()
    assert ("call", "unload") in refs and ("param", ("Launcher", "count")) in refs, refs
    for kind, key in refs:
        if kind == "param":
            op, name = key
            assert (op, name) in FLAGS or name in FLAGS, key
        else:
            assert key in COMMANDS, key


# Flags of other programs the library's messages may name.
OTHER_PROGRAMS_FLAGS = {"--system-site-packages", "--net"}
FLAG = re.compile(r"(?<![\w`-])--[a-z][a-z-]*")


def test_the_library_spells_no_flag_and_no_command():
    """What the library says is in its own terms; `rpctl run` is the launcher's name, not a command line."""
    for path in CONTROLLER.rglob("*.py"):
        tree = ast.parse(path.read_text())
        docstrings = {
            id(n.body[0].value)
            for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef)) and n.body
            and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                text = node.value.replace("`rpctl run`", "")
                if path.name == "supervisor.py" and "os.execvp" in text:
                    continue  # the child's wrapper, run by `python -c`
                assert set(FLAG.findall(text)) <= OTHER_PROGRAMS_FLAGS and "`rpctl " not in text, (path.name, text)


# Errors the library raises, as the user reads them -----------------------------------------------


def test_several_groups_say_which_with_group(tmp_path):
    layout = Layout(root=str(tmp_path), netns="ns")
    for name in ("a", "b"):
        os.makedirs(layout.group_dir(name))
    with pytest.raises(UsageError) as e:
        group.resolve_group(None, layout)
    assert str(e.value) == "several groups here (a, b): say which with group"
    assert error_line(e.value) == ("several groups here (a, b): say which with --group", ExitStatus.USAGE)


@pytest.mark.parametrize(
    "kwargs, says",
    [
        ({"count": 0}, "run: -n 0 is out of range 1..256"),
        ({"argv": []}, "run: no command given (put it after --)"),
        ({"proto": "sctp"}, "run: --proto 'sctp': use tcp or udp"),
        ({"listen": "localhost:80"}, "run: --listen 'localhost:80': use HOST:PORT"),
        ({"name_format": "same"}, "run: --name 'same' gives every member the same name: put {i} in it"),
        ({"name_format": "w{x}"}, "run: --name 'w{x}': only {i} may be used"),
    ],
)
def test_launcher_refusals_name_the_run_flags(kwargs, says):
    args = {"group": None, "count": 2, "argv": ["true"], **kwargs}
    with pytest.raises(RpctlError) as e:
        launcher.Launcher(args.pop("group"), args.pop("count"), args.pop("argv"), **args)
    assert error_text(e.value).startswith(says), error_text(e.value)
    assert " --" not in str(e.value) and "-n " not in str(e.value)


def test_rollout_batch():
    with pytest.raises(InvalidInput) as e:
        check_batch(0, 4)
    assert error_text(e.value) == "rollout: --batch 0: use a whole number of members, at least 1"
    assert str(e.value) == "rollout: batch 0: use a whole number of members, at least 1"


def test_adopt_refusals_name_its_flags_and_register():
    tcp, udp = endpoint(proto="tcp"), endpoint(proto="udp")
    with pytest.raises(UsageError) as e:
        adopt.pick_endpoint([tcp, udp], 8080, None, None)
    assert error_text(e.value).endswith(
        "several endpoints use it (tcp:127.0.0.1:8080, udp:127.0.0.1:8080): say which with --proto and/or --addr"
    )
    unserved = Listener(1, 1001, 0, 0, 128, [Holder(10, 5, "srv"), Holder(11, 5, "srv")], [], None)
    with pytest.raises(InvalidInput) as e:
        adopt.plan(endpoint(unserved, proto="tcp"), "{comm}-{pid}", {}, "g")
    assert error_text(e.value).endswith("(register it with `rpctl register NAME --pid PID --fd FD`)")
    twice = [Listener(c, c, 0, 0, 128, [Holder(10, c, "srv")], [10], Holder(10, c, "srv")) for c in (5, 6)]
    with pytest.raises(InvalidInput) as e:
        adopt.plan(endpoint(*twice, proto="tcp"), "{comm}-{pid}", {}, "g")
    assert error_text(e.value).endswith("add {fd} or {i} to --name-format")


def test_pin_refusals_name_map_dev_and_pin_cpu():
    with pytest.raises(InvalidInput) as e:
        pin_table.assign_from_affinity({"a": {0, 1}}, frozenset({0, 1}))
    assert error_text(e.value).endswith("or give --map") and str(e.value).endswith("or give mapping")
    info = rss.RssInfo("eth0", unsupported={"indirection": "ETHTOOL_GRSSH: Operation not supported"})
    with pytest.raises(InvalidInput) as e:
        rss.steering_flags(info, "tcp", socket.AF_INET)
    line = error_text(e.value)
    assert line.startswith("pin rss --dev eth0: the device has no RSS (ETHTOOL_GRSSH: Operation not supported)")
    assert line.endswith("; `rpctl pin cpu` pins by the CPU that handles a connection")
    assert str(e.value).startswith("pin rss dev eth0: ")


def test_an_error_re_raised_under_a_prefix_keeps_its_class_and_references():
    e = InvalidInput("group 'g' already has a member 'w' (use ", Param("replace", flag=True), " to swap its socket)")
    outer = e.within("adopt tcp:127.0.0.1:8080: ")
    assert type(outer) is InvalidInput
    assert error_text(outer) == (
        "adopt tcp:127.0.0.1:8080: group 'g' already has a member 'w' (use --replace to swap its socket)"
    )
