"""`rpctl dashboard`: its options, its frames without a terminal, and groups that go away.

The snapshots are hand-built (tests/support/views.py's `four`): no privileges, no bpffs.
"""

from __future__ import annotations

import argparse
import re

import pytest
from rpctl.cli import dashboard_cmd
from rpctl.cli.main import build_parser
from rpctl.controller.contract.errors import InvalidInput, NotFound, RpctlError, UsageError
from rpctl.controller.read import views as read_model
from rpctl.controller.store import group as groups

from tests.support.cli import assert_one_error_line, invoke
from tests.support.views import four


@pytest.fixture(autouse=True)
def no_system(refuse_system, monkeypatch):
    monkeypatch.setattr(read_model, "read_views", refuse_system)


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["dashboard", *argv])


def test_add_commands_defaults():
    args = parse()
    assert args.handler is dashboard_cmd.cmd_dashboard
    assert args.interval == 0.25 and args.frames is None and args.group is None
    args = parse("--group", "web", "--interval", "1", "--frames", "3")
    assert (args.group, args.interval, args.frames) == ("web", 1.0, 3)


def test_without_a_terminal_one_frame_is_printed(monkeypatch):
    polls = []

    def views(group=None, **kw):
        polls.append(group)
        return [four(len(polls))]

    monkeypatch.setattr(read_model, "read_views", views)
    status, out, _ = invoke(["dashboard", "--interval", "0.05"])
    assert status == 0
    assert out.count("rpctl dashboard") == 1
    assert "worker-3" in out and "drained" in out
    assert len(polls) == 2  # one poll before the frame, so that its rates are measured
    # Its rate is measured (a number, not "-"): 100 connections in one interval.
    assert re.search(r"%\s+\d+\s", next(line for line in out.splitlines() if line.startswith("worker-1 ")))

    assert invoke(["dashboard", "--interval", "0.05", "--frames", "3"]).stdout.count("rpctl dashboard") == 3


def refused(argv: list[str], error: type[RpctlError]) -> str:
    """`rpctl dashboard ARGV` refused with `error`'s exit status, one line and an empty screen."""
    status, out, err = invoke(["dashboard", *argv])
    assert (status, out) == (error.exit_status, "")
    return assert_one_error_line(err)


def test_bad_options_and_unknown_groups_are_refused(monkeypatch):
    refused(["--interval", "0"], InvalidInput)
    refused(["--frames", "0"], InvalidInput)

    def resolve(name, layout=None):
        raise NotFound(f"no group {name!r} in this network namespace")

    monkeypatch.setattr(groups, "resolve_group", resolve)
    refused(["--group", "nope"], NotFound)


def test_a_group_unloaded_while_watched_is_shown_removed(monkeypatch):
    calls = []

    def views(group=None, **kw):
        calls.append(group)
        if len(calls) > 1:
            raise NotFound("no group 'web' in this network namespace")
        return [four(1)]

    monkeypatch.setattr(read_model, "read_views", views)
    monkeypatch.setattr(groups, "resolve_group", lambda name, layout=None: name)
    status, out, _ = invoke(["dashboard", "--group", "web", "--interval", "0.05"])
    assert status == 0
    assert "group web removed" in out


def test_through_prometheus_one_frame_shows_every_host(monkeypatch):
    from tests.support.prometheus import FakeApi, recorded_answers

    monkeypatch.setattr(dashboard_cmd, "FLEET_MIN_INTERVAL", 0.05)
    with FakeApi(recorded_answers()) as api:
        status, out, err = invoke(["dashboard", "--prometheus", api.url, "--interval", "0.05"])
    assert status == 0 and err == ""
    assert out.count("rpctl dashboard") == 1 and "3 groups" in out
    assert len(re.findall(r"^127\.0\.0\.1:\d+\s+tcp-700\d", out, re.M)) == 3


def test_through_prometheus_a_wrong_url_is_refused_before_the_screen():
    from tests.support.prometheus import FakeApi

    with FakeApi(lambda expr: (404, b"")) as api:
        assert "not a Prometheus server" in refused(["--prometheus", api.url], InvalidInput)
    assert "need --prometheus" in refused(["--match", "{a=\"b\"}"], UsageError)
