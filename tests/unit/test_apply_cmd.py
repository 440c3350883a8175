"""`rpctl apply` in-process: its lines, --json, --prune and its refusals, with reconcile and the namespace faked."""

from __future__ import annotations

import json
import socket

import pytest
from rpctl.controller.contract.errors import ExitStatus, PermissionDenied, StateError
from rpctl.controller.contract.refs import Call
from rpctl.controller.kernel import probe
from rpctl.controller.kernel.sockets import EndpointKey
from rpctl.controller.ops import config, reconcile
from rpctl.controller.ops.reconcile import Add, Plan, Unmanaged
from rpctl.controller.store import group as groups
from rpctl.controller.store import state

from tests.support.cli import assert_one_error_line, invoke

KEY = EndpointKey("tcp", socket.AF_INET, "127.0.0.1", 8080)
FILE = """\
[[group]]
name = "web"
listen = "tcp:127.0.0.1:8080"
adopt = { comm = "nginx" }

[[group]]
name = "api"
listen = "tcp:127.0.0.1:9090"
run = { command = ["/srv/api"], count = 2 }
"""


class FakeLayout:
    def __init__(self, groups=()):
        self._groups = list(groups)

    def groups(self):
        return list(self._groups)


@pytest.fixture
def fake(monkeypatch, refuse_system, tmp_path):
    """reconcile() answers from `plans`; the namespace has groups `present`; unloads are recorded."""
    path = tmp_path / "rpctl.toml"
    path.write_text(FILE)
    seen = {"reconcile": [], "unload": [], "present": ["web", "old"]}
    web = Plan("web", KEY, adds=(Add("nginx-1", 1, 101, 6, "nginx", 1, False),),
               unmanaged=(Unmanaged(9, 1009, 555, "python3", "comm 'python3' is not 'nginx'"),))

    def fake_reconcile(spec, layout=None, dry_run=False, look=None):
        seen["reconcile"].append((spec.name, dry_run))
        if spec.run is not None:
            return reconcile.plan(spec, reconcile.Observed(spec.name, spec.listen))
        return web

    monkeypatch.setattr(reconcile, "reconcile", fake_reconcile)
    monkeypatch.setattr(state, "Layout", lambda *a, **kw: FakeLayout(seen["present"]))
    monkeypatch.setattr(groups, "unload", lambda group=None, **kw: seen["unload"].append(group) or (group, True))
    seen["path"] = str(path)
    return seen


def test_apply_prints_each_groups_plan_and_leaves_other_groups_alone(fake):
    code, out, err = invoke(["apply", "-c", fake["path"]])
    assert code == 0, err
    assert out.splitlines() == [
        "group web: + nginx-1 (pid 101 nginx fd 6, weight 1)",
        "group web: not admitted: socket 9 of pid 555 python3 (comm 'python3' is not 'nginx')",
        "group api: kept by rpctl serve (its members are launched by `run`)",
        f"group old: not in {fake['path']}, left alone (--prune unloads it)",
    ]
    assert fake["reconcile"] == [("web", False), ("api", False)] and fake["unload"] == []


def test_a_group_that_cannot_be_applied_is_one_line_and_the_others_go_on(fake, monkeypatch):
    applied = reconcile.reconcile

    def refuse_web(spec, layout=None, dry_run=False, look=None):
        if spec.name == "web":
            raise StateError("its options differ (", Call("unload", group="web"), " first)")
        return applied(spec, layout, dry_run)

    monkeypatch.setattr(reconcile, "reconcile", refuse_web)
    code, out, err = invoke(["apply", "-c", fake["path"]])
    assert code == ExitStatus.STATE, (code, out, err)
    assert err == "rpctl: group web: its options differ (`rpctl unload --group web` first)\n"
    assert out.splitlines()[0] == "group api: kept by rpctl serve (its members are launched by `run`)"
    code, out, err = invoke(["apply", "-c", fake["path"], "--json"])
    assert code == ExitStatus.STATE and json.loads(out)["failed"] == [
        {"group": "web", "error": "group web: its options differ (`rpctl unload --group web` first)"}
    ]

    def no_privileges(spec, layout=None, dry_run=False, look=None):
        raise PermissionDenied("apply web: needs CAP_BPF (run as root)")

    monkeypatch.setattr(reconcile, "reconcile", no_privileges)
    code, out, err = invoke(["apply", "-c", fake["path"]])
    assert code == ExitStatus.PERMISSION and err.count("\n") == 1 and out == "", (out, err)


def test_dry_run_and_prune(fake):
    code, out, _ = invoke(["apply", "-c", fake["path"], "--dry-run", "--prune"])
    assert code == 0 and fake["reconcile"] == [("web", True), ("api", True)] and fake["unload"] == []
    assert out.splitlines()[-1] == f"group old: would be unloaded (not in {fake['path']})"
    code, out, _ = invoke(["apply", "-c", fake["path"], "--prune"])
    assert code == 0 and fake["unload"] == ["old"]
    assert out.splitlines()[-1] == f"group old: unloaded (not in {fake['path']})"


def test_json(fake):
    code, out, _ = invoke(["apply", "-c", fake["path"], "--json", "--prune"])
    assert code == 0
    doc = json.loads(out)
    assert set(doc) == {"config", "dry_run", "groups", "failed", "pruned"} and doc["pruned"] == ["old"]
    assert doc["failed"] == []
    web, api = doc["groups"]
    assert set(web) == {"group", "endpoint", "changed", "created", "kept_by_serve", "added", "removed", "refreshed",
                        "policies", "pin", "unmanaged", "unknown_names", "lines"}
    assert web["added"] == [{"name": "nginx-1", "pid": 101, "fd": 6, "comm": "nginx", "cookie": 1, "weight": 1,
                             "draining": False}]
    assert web["unmanaged"] == [{"pid": 555, "comm": "python3", "cookie": 9, "inode": 1009,
                                 "reason": "comm 'python3' is not 'nginx'"}]
    assert api["kept_by_serve"] and not api["changed"]


def test_an_empty_file(fake, tmp_path):
    fake["present"] = []
    path = tmp_path / "empty.toml"
    path.write_text("# nothing yet\n")
    assert invoke(["apply", "-c", str(path)]) == (0, f"{path} names no group\n", "")


@pytest.mark.parametrize("text, status, line", [
    (None, ExitStatus.NOT_FOUND, "rpctl: config file {path}: no such file"),
    ('[[group]]\nname = "web"\nlisten = "tcp:1.2.3.4:80"\nadopt = { comm = "x" }\nwieght = 2\n', ExitStatus.INVALID,
     "rpctl: {path}:5: group 'web': key 'wieght': unknown key (known: " + ", ".join(config.GROUP_KEYS) + ")"),
])
def test_refusals_are_one_line_and_change_nothing(fake, tmp_path, text, status, line):
    path = tmp_path / "bad.toml"
    if text is not None:
        path.write_text(text)
    code, out, err = invoke(["apply", "-c", str(path)])
    assert (code, out) == (status, "")
    assert assert_one_error_line(err) == line.format(path=path)
    assert fake["reconcile"] == []


def test_without_privileges_exit_5(monkeypatch, refuse_system, tmp_path):
    path = tmp_path / "rpctl.toml"
    path.write_text(FILE)

    def no_caps(what):
        raise PermissionDenied(f"{what}: needs root or CAP_BPF + CAP_NET_ADMIN")

    monkeypatch.setattr(probe, "require_bpf_privileges", no_caps)
    monkeypatch.setattr(state, "Layout", lambda *a, **kw: FakeLayout())
    code, out, err = invoke(["apply", "-c", str(path)])
    assert code == ExitStatus.PERMISSION and out == ""
    assert assert_one_error_line(err) == "rpctl: apply group web: needs root or CAP_BPF + CAP_NET_ADMIN"


def test_the_default_file():
    code, out, _ = invoke(["apply", "--help"])
    assert code == 0 and config.DEFAULT_PATH in out
