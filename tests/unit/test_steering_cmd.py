"""`rpctl weights`, `drain`, `undrain` in-process: input refused before any group is
looked up, and what a change prints."""

from __future__ import annotations

import json
import re

import pytest
from rpctl.cli import json_docs
from rpctl.controller.contract.errors import ExitStatus, NotFound, PermissionDenied
from rpctl.controller.kernel import probe
from rpctl.controller.read import views as read_model
from rpctl.controller.store import group

from tests.support.cli import assert_one_error_line, invoke
from tests.support.views import STATES, group_view

pytestmark = pytest.mark.usefixtures("cli_without_system")


@pytest.fixture
def no_group(monkeypatch):
    """No group and no privileges: whatever reaches them would say so, not exit 4."""

    def no_group(*args, **kwargs):
        raise NotFound("no group in this network namespace: register a member first")

    def no_caps(what):
        raise PermissionDenied(f"{what}: needs root (or CAP_BPF and CAP_NET_ADMIN)")

    monkeypatch.setattr(group, "resolve_group", no_group)
    monkeypatch.setattr(read_model, "read_views", no_group)
    monkeypatch.setattr(read_model, "read_view", no_group)
    monkeypatch.setattr(probe, "require_bpf_privileges", no_caps)


def test_odd_digits_exit_4(no_group):
    status, _, err = invoke(["weights", "a=--3"])
    assert status == ExitStatus.INVALID, err


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

    def read_view(group=None, layout=None, with_queues=True):
        if group not in (None, "web"):  # None: the only group there is, web
            raise NotFound(f"no group {group!r} in this network namespace")
        return view

    monkeypatch.setattr(read_model, "read_view", read_view)
    status, out, err = invoke(["weights", "worker-1=3", "worker-2=0", "-g", "web", "--json"])
    assert status == 0 and err == ""
    assert calls == [({"worker-1": 3, "worker-2": 0}, "web")]
    assert json.loads(out) == json_docs.weights_json(view)
    status, out, _ = invoke(["weights"])
    assert status == 0
    assert len(calls) == 1, "weights without NAME=WEIGHT must not write"
    for name, state_ in STATES.items():
        assert re.search(rf"\b{name}\b.*\b{state_}\b", out), out
