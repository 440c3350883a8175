"""The command line, in-process: parsing, help, input checks, rendering and exit codes.

Everything runs through rpctl.cli.main.run(argv, env) with StringIO streams.  No privileges
and no bpffs: an autouse fixture makes any path to the system fail loudly, and each test
monkeypatches the group functions a command calls.
"""

from __future__ import annotations

import argparse
import errno
import io
import json
import re
import socket

import pytest
from rich.console import Console
from rpctl.cli import json_docs, render
from rpctl.cli.common import Environment, parse_assignments
from rpctl.cli.main import build_parser, run
from rpctl.controller import errors, group, probe
from rpctl.controller import views as read_model
from rpctl.controller.errors import ExitStatus, InvalidInput, NotFound, PermissionDenied, RpctlError
from rpctl.controller.group import check_member_name, check_weight
from rpctl.controller.views import GroupView, MemberView


@pytest.fixture(autouse=True)
def no_system(refuse_system, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # env.console(): wide enough that nothing is cut


def invoke(argv: list[str]) -> tuple[int, str, str]:
    env = Environment(stdout=io.StringIO(), stderr=io.StringIO())
    status = run(argv, env)
    return status, env.stdout.getvalue(), env.stderr.getvalue()


def assert_one_error_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {stderr!r}"
    assert lines[0].startswith("rpctl: "), lines[0]
    return lines[0]


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


SUBCOMMANDS = sorted(_subparsers())


# Views to render -----------------------------------------------------------------


def member(index: int, name: str, **kw) -> MemberView:
    fields = {
        "index": index, "name": name, "pid": 4200 + index, "fd": 3, "cookie": 8193 + index, "weight": 1,
        "draining": False, "gone": False, "selected": 100 * (index + 1), "fallback": index, "migrated": 0,
        "pinned": 7 * index, "since_publish": 10 * (index + 1), "target_share": 0.25, "observed_share": 0.123456789,
        "queue": 2,
    }
    return MemberView(**{**fields, **kw})


def group_view(members=None, **kw) -> GroupView:
    fields = {
        "name": "tcp-18080", "proto": "tcp", "family": socket.AF_INET, "addr": "127.0.0.1", "port": 18080,
        "prog_id": 42, "gen": 1, "mode": "weighted", "published_ns": 1_700_000_000_000_000_000,
        "created_ns": 1_600_000_000_000_000_000, "slot_misses": 5, "no_live_member": 6, "pin_fallbacks": 7,
        "pin_unassigned": 8, "rss_unhashed": 9,
    }
    view = GroupView(**{**fields, **kw})
    view.members = members if members is not None else [
        member(0, "worker-1"),
        member(1, "worker-2", draining=True, queue=3),
        member(2, "worker-3", draining=True, queue=0),
        member(3, "worker-4", gone=True),
    ]
    return view


STATES = {"worker-1": "active", "worker-2": "draining", "worker-3": "drained", "worker-4": "gone"}


# Help -----------------------------------------------------------------------------


def test_parser_has_every_command():
    assert set(SUBCOMMANDS) >= {
        "register", "unregister", "unload", "weights", "drain", "undrain", "status", "doctor", "demo", "metrics",
    }


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_subcommand_help_ends_with_examples(capsys, command):
    status, out, err = invoke([command, "--help"])
    # argparse prints help on sys.stdout, not env.stdout: read both.
    text = out + capsys.readouterr().out
    assert status == 0
    assert err == ""
    assert f"usage: rpctl {command}" in text
    assert "examples:" in text
    examples = text.rstrip("\n").split("examples:\n")[-1].splitlines()
    assert examples, f"{command} --help has an empty examples section"
    for line in examples:
        assert line.startswith(f"  rpctl {command}"), f"{command} --help: {line!r} is not an example"


def test_top_level_help_lists_every_exit_code(capsys):
    status, out, err = invoke(["--help"])
    text = out + capsys.readouterr().out
    assert status == 0 and err == ""
    assert "examples:" in text
    for command in SUBCOMMANDS:
        assert command in text
    codes = text.split("exit codes:", 1)[1]
    listed = {int(n): what for n, what in re.findall(r"(\d+) ([a-z][a-z ]*)", codes)}
    assert set(listed) == {int(s) for s in ExitStatus}
    assert listed[0].startswith("ok") and listed[2].startswith("usage") and listed[8].startswith("timeout")




def test_help_goes_to_the_environment(capsys):
    status, out, _ = invoke(["status", "--help"])
    capsys.readouterr()
    assert status == 0
    assert "examples:" in out


# Bad command lines ----------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, says",
    [
        ([], "required: COMMAND"),
        (["bogus"], "invalid choice: 'bogus'"),
        (["register", "w1", "--fd", "3"], "required: --pid"),
        (["register", "w1", "--pid", "x", "--fd", "3"], "argument --pid: invalid int value: 'x'"),
        (["status", "--bogus"], "unrecognized arguments: --bogus"),
        (["weights", "--json", "--group"], "argument --group/-g: expected one argument"),
        (["drain", "w1", "--timeout", "soon"], "invalid float value: 'soon'"),
    ],
)
def test_bad_command_line_exits_2_with_one_line(argv, says):
    status, out, err = invoke(argv)
    assert status == ExitStatus.USAGE == 2
    assert out == ""
    line = assert_one_error_line(err)
    assert says in line
    assert line.endswith("--help)")


# NAME=WEIGHT ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "items, expected",
    [
        ([], {}),
        (["worker-1=3"], {"worker-1": 3}),
        (["worker-1=3", "worker-2=0", "w3=10000"], {"worker-1": 3, "worker-2": 0, "w3": 10000}),
        (["a=-1"], {"a": -1}),  # parses: the range is check_weight's job
        (["a= 7 "], {"a": 7}),
    ],
)
def test_parse_assignments_valid(items, expected):
    assert parse_assignments(items) == expected


@pytest.mark.parametrize(
    "items", [["a"], ["=3"], ["a=x"], ["a=1.5"], ["a="], ["a=1e3"], ["a=0x10"], ["a=1", "b=2", "a=3"]]
)
def test_parse_assignments_refuses(items):
    with pytest.raises(InvalidInput):
        parse_assignments(items)




@pytest.mark.parametrize("value", ["--3", "---7", "\u00b2", "1\u00b2"])
def test_parse_assignments_refuses_odd_digits(value):
    with pytest.raises(InvalidInput):
        parse_assignments([f"a={value}"])


def test_odd_digits_exit_4(no_group):
    status, _, err = invoke(["weights", "a=--3"])
    assert status == ExitStatus.INVALID, err


@pytest.fixture
def no_group(monkeypatch):
    """No group and no privileges: whatever reaches them would say so, not exit 4."""

    def no_group(*args, **kwargs):
        raise NotFound("no group in this network namespace: register a member first")

    def no_caps(what):
        raise PermissionDenied(f"{what}: needs root (or CAP_BPF and CAP_NET_ADMIN)")

    monkeypatch.setattr(group, "resolve_group", no_group)
    monkeypatch.setattr(read_model, "read_views", no_group)
    monkeypatch.setattr(probe, "require_bpf_privileges", no_caps)


@pytest.mark.parametrize(
    "assignments, says",
    [
        (["a=x"], "weight of a: 'x' is not a whole number"),
        (["a"], "'a' is not NAME=WEIGHT"),
        (["a=1", "a=2"], "a is given twice"),
        (["a=-1"], "weight of a: -1 is out of range 0..10000"),
        (["a=10001"], "out of range"),
    ],
)
def test_bad_weights_exit_4_before_any_group_lookup(no_group, assignments, says):
    status, out, err = invoke(["weights", *assignments])
    assert status == ExitStatus.INVALID == 4, err
    assert out == ""
    assert says in assert_one_error_line(err)


# Member names and weights --------------------------------------------------------


@pytest.mark.parametrize("name", ["w", "worker-1", "a" * 31, "é" * 15, "canary_2"])
def test_check_member_name_accepts(name):
    assert check_member_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "a" * 32, "a" * 40, "é" * 16, "a=b", "=", " a", "a ", " ", "a\tb", "a\nb"]
)
def test_check_member_name_refuses(name):
    with pytest.raises(InvalidInput, match="member name"):
        check_member_name(name)


@pytest.mark.parametrize("weight", [0, 1, 9999, 10000])
def test_check_weight_accepts(weight):
    assert check_weight("w", weight) == weight


@pytest.mark.parametrize("weight", [-1, 10001, 2**40, True, False, 1.0, 1.5, "3", None])
def test_check_weight_refuses(weight):
    with pytest.raises(InvalidInput, match="weight of w"):
        check_weight("w", weight)


# Rendering -----------------------------------------------------------------------

# The stable JSON interface, as render.py writes it today: renaming a key must fail here.
GROUP_KEYS = {
    "name", "protocol", "address", "port", "program_id", "mode", "pin_device", "migration", "generation",
    "published_ns", "counters", "members",
}
COUNTER_KEYS = {"slot_misses", "no_live_member", "pin_fallbacks", "pin_unassigned", "rss_unhashed"}
MEMBER_KEYS = {
    "name", "index", "pid", "fd", "cookie", "state", "weight", "target_share", "observed_share", "selected",
    "fallback", "migrated", "pinned", "pins", "selected_since_change", "queue",
}
WEIGHTS_KEYS = {"group", "members"}
WEIGHTS_MEMBER_KEYS = {"name", "state", "weight", "target_share", "observed_share", "selected_since_change"}


@pytest.mark.parametrize(
    "draining, gone, queue, state",
    [
        (False, False, 5, "active"),
        (False, False, 0, "active"),
        (False, False, None, "active"),
        (True, False, 3, "draining"),
        (True, False, None, "draining"),  # queue unknown: not yet known to be empty
        (True, False, 0, "drained"),
        (False, True, 0, "gone"),
        (True, True, 0, "gone"),
        (True, True, None, "gone"),
    ],
)
def test_member_state(draining, gone, queue, state):
    assert member(0, "w", draining=draining, gone=gone, queue=queue).state == state


def test_status_json_keys_and_values():
    view = group_view()
    doc = json_docs.status_json([view])
    json.dumps(doc)  # serialisable as it is
    assert set(doc) == {"groups"}
    (g,) = doc["groups"]
    assert set(g) == GROUP_KEYS
    assert set(g["counters"]) == COUNTER_KEYS
    assert g["counters"] == {"slot_misses": 5, "no_live_member": 6, "pin_fallbacks": 7, "pin_unassigned": 8,
                             "rss_unhashed": 9}
    assert g["pin_device"] is None
    assert (g["name"], g["protocol"], g["address"], g["port"]) == ("tcp-18080", "tcp", "127.0.0.1", 18080)
    assert (g["program_id"], g["generation"], g["mode"]) == (42, 1, "weighted")
    assert g["published_ns"] == view.published_ns
    assert [m["name"] for m in g["members"]] == list(STATES)
    for m in g["members"]:
        assert set(m) == MEMBER_KEYS
        assert m["state"] == STATES[m["name"]]
    first = g["members"][0]
    assert (first["pid"], first["index"], first["cookie"], first["queue"]) == (4200, 0, 8193, 2)
    assert first["selected_since_change"] == 10
    assert first["observed_share"] == 0.123457
    assert json_docs.status_json([]) == {"groups": []}


def test_weights_json_keys_and_values():
    view = group_view()
    view.members[3].observed_share = None
    doc = json_docs.weights_json(view)
    json.dumps(doc)
    assert set(doc) == WEIGHTS_KEYS
    assert doc["group"] == "tcp-18080"
    for m in doc["members"]:
        assert set(m) == WEIGHTS_MEMBER_KEYS
        assert m["state"] == STATES[m["name"]]
    assert doc["members"][0]["target_share"] == 0.25
    assert doc["members"][3]["observed_share"] is None


def _render(table, width: int) -> str:
    console = Console(file=io.StringIO(), width=width)
    console.print(table)
    return console.file.getvalue()


def test_weights_table_at_80_columns():
    text = _render(render.weights_table(group_view()), 80)
    assert "tcp:127.0.0.1:18080" in text
    for name, state_ in STATES.items():
        assert re.search(rf"\b{name}\b.*\b{state_}\b", text), f"{name} {state_} missing:\n{text}"
    assert "25.0%" in text and "12.3%" in text


def test_status_table_shows_every_member_and_state():
    text = _render(render.status_table(group_view()), 120)
    assert "group tcp-18080" in text and "tcp:127.0.0.1:18080" in text
    for name, state_ in STATES.items():
        assert re.search(rf"\b{name}\b.*\b{state_}\b", text), f"{name} {state_} missing:\n{text}"




def test_status_table_at_80_columns():
    text = _render(render.status_table(group_view()), 80)
    for name, state_ in STATES.items():
        assert re.search(rf"\b{name}\b.*\b{state_}\b", text), f"{name} {state_} missing:\n{text}"


def test_ipv6_endpoint_is_bracketed():
    view = group_view(family=socket.AF_INET6, addr="::1", proto="udp", port=53)
    assert view.endpoint == "udp:[::1]:53"
    assert "udp:[::1]:53" in _render(render.weights_table(view), 80)


# Errors and exit codes -----------------------------------------------------------

ERROR_CLASSES = [errors.RpctlError] + [
    getattr(errors, n) for n in errors.__all__ if n not in ("ExitStatus", "RpctlError")
]


def test_every_error_class_is_exported():
    assert set(RpctlError.__subclasses__()) == set(ERROR_CLASSES[1:])
    assert sorted(int(c.exit_status) for c in ERROR_CLASSES) == sorted(int(s) for s in ExitStatus if s != 0)


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
def test_error_maps_to_its_exit_status(monkeypatch, cls):
    def set_weights(weights, group=None):
        raise cls("set weights: boom")

    monkeypatch.setattr(group, "set_weights", set_weights)
    status, out, err = invoke(["weights", "worker-1=2"])
    assert status == cls.exit_status
    assert out == ""
    assert err == "rpctl: set weights: boom\n"


@pytest.mark.parametrize("code", [errno.EPERM, errno.EACCES])
def test_permission_oserror_exits_5(monkeypatch, code):
    def views(group=None):
        raise OSError(code, "Operation not permitted", "/sys/fs/bpf/rpctl")

    monkeypatch.setattr(read_model, "read_views", views)
    status, _, err = invoke(["status"])
    assert status == ExitStatus.PERMISSION == 5
    line = assert_one_error_line(err)
    assert "/sys/fs/bpf/rpctl" in line and "run as root" in line


def _explode(monkeypatch, exc: BaseException):
    def views(group=None):
        raise exc

    monkeypatch.setattr(read_model, "read_views", views)


def test_unexpected_exception_exits_1(monkeypatch):
    _explode(monkeypatch, RuntimeError("kaboom"))
    status, out, err = invoke(["status"])
    assert status == ExitStatus.ERROR == 1
    assert out == ""
    assert err == "rpctl: unexpected error: RuntimeError: kaboom\n"


def test_traceback_option_adds_the_traceback(monkeypatch):
    _explode(monkeypatch, RuntimeError("kaboom"))
    status, _, err = invoke(["--traceback", "status"])
    assert status == 1
    lines = err.splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert "RuntimeError: kaboom" in lines
    assert lines[-1] == "rpctl: unexpected error: RuntimeError: kaboom"
    assert any("cmd_status" in line for line in lines)


def test_traceback_option_also_for_rpctl_errors(monkeypatch):
    _explode(monkeypatch, NotFound("no group 'web' in this network namespace"))
    status, _, err = invoke(["--traceback", "status", "-g", "web"])
    assert status == 3
    assert err.startswith("Traceback (most recent call last):")
    assert err.splitlines()[-1] == "rpctl: no group 'web' in this network namespace"


def test_interrupt_exits_130(monkeypatch):
    _explode(monkeypatch, KeyboardInterrupt())
    status, _, err = invoke(["status"])
    assert status == 130
    assert err == "rpctl: interrupted\n"


# status and weights without bpffs ------------------------------------------------


def test_status_with_no_group(monkeypatch):
    calls = []
    monkeypatch.setattr(read_model, "read_views", lambda group=None: calls.append(group) or [])
    status, out, err = invoke(["status"])
    assert (status, out, err) == (0, "no group in this network namespace\n", "")
    assert calls == [None]


def test_status_json_with_no_group(monkeypatch):
    monkeypatch.setattr(read_model, "read_views", lambda group=None: [])
    status, out, err = invoke(["status", "--json"])
    assert status == 0 and err == ""
    assert json.loads(out) == {"groups": []}


def test_status_without_privileges(monkeypatch):
    _explode(monkeypatch, PermissionDenied("bpffs is not mounted at /sys/fs/bpf and mounting it needs root"))
    status, out, err = invoke(["status"])
    assert status == 5 and out == ""
    assert "needs root" in assert_one_error_line(err)


def test_status_of_a_missing_group(monkeypatch):
    calls = []

    def views(group=None):
        calls.append(group)
        raise NotFound(f"no group {group!r} in this network namespace")

    monkeypatch.setattr(read_model, "read_views", views)
    status, _, err = invoke(["status", "--group", "web"])
    assert status == 3
    assert assert_one_error_line(err) == "rpctl: no group 'web' in this network namespace"
    assert calls == ["web"]


def test_status_prints_tables_and_json(monkeypatch):
    view = group_view()
    monkeypatch.setattr(read_model, "read_views", lambda group=None: [view])
    status, out, err = invoke(["status"])
    assert status == 0 and err == ""
    for name, state_ in STATES.items():
        assert re.search(rf"\b{name}\b.*\b{state_}\b", out), out
    status, out, _ = invoke(["status", "--json"])
    assert status == 0
    assert json.loads(out) == json_docs.status_json([view])


def test_weights_with_no_group(no_group):
    status, out, err = invoke(["weights"])
    assert status == 3 and out == ""
    assert assert_one_error_line(err) == "rpctl: no group in this network namespace: register a member first"


def test_weights_sets_then_shows(monkeypatch):
    view = group_view()
    calls = []
    def set_weights(weights, group=None):
        calls.append((weights, group))
        return "web"

    monkeypatch.setattr(group, "set_weights", set_weights)
    monkeypatch.setattr(group, "resolve_group", lambda name: "web" if name in (None, "web") else None)
    monkeypatch.setattr(read_model, "read_views", lambda group=None, with_queues=True: [view] if group == "web" else [])
    status, out, err = invoke(["weights", "worker-1=3", "worker-2=0", "-g", "web", "--json"])
    assert status == 0 and err == ""
    assert calls == [({"worker-1": 3, "worker-2": 0}, "web")]
    assert json.loads(out) == json_docs.weights_json(view)
    status, out, _ = invoke(["weights"])
    assert status == 0
    assert len(calls) == 1, "weights without NAME=WEIGHT must not write"
    for name, state_ in STATES.items():
        assert re.search(rf"\b{name}\b.*\b{state_}\b", out), out


def test_traceback_is_an_option_of_rpctl_itself():
    status, _, err = invoke(["status", "--traceback"])
    assert status == ExitStatus.USAGE
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
