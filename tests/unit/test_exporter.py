"""cli/exporter.py: the collector of `rpctl metrics` reads the groups at every scrape; a failure is rpctl_up 0."""

from __future__ import annotations

import pytest
from rpctl.cli import exporter
from rpctl.controller.contract.errors import NotFound, StateError
from rpctl.controller.read import views as read_model

from tests.support.metrics import samples, scrape
from tests.support.views import group_view

pytestmark = pytest.mark.usefixtures("groups_unreadable")


def test_collector_reads_at_every_scrape_and_reports_a_failure_once(monkeypatch):
    answers = [[group_view()], NotFound("no group 'web' in this network namespace"),
               NotFound("no group 'web' in this network namespace"), [group_view()]]
    calls = []

    def views(group=None, with_queues=True):
        calls.append((group, with_queues))
        answer = answers[len(calls) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(read_model, "read_views", views)
    log = []
    collector = exporter.GroupCollector("web", log.append)
    ups = [samples(scrape(collector.collect())["rpctl_up"])[()] for _ in answers]
    assert ups == [1.0, 0.0, 0.0, 1.0]
    assert calls == [("web", True)] * 4, "every scrape reads afresh, queue depths included"
    assert log == ["cannot read the pinned state: no group 'web' in this network namespace",
                   "reading the pinned state again"]


def test_collector_reports_damaged_state_and_os_errors_as_not_up(monkeypatch):
    for exc in (StateError("group 'web': pinned state is incomplete"), PermissionError(1, "Operation not permitted")):
        def views(group=None, with_queues=True, exc=exc):
            raise exc

        monkeypatch.setattr(read_model, "read_views", views)
        log = []
        got = scrape(exporter.GroupCollector(None, log.append).collect())
        assert samples(got["rpctl_up"]) == {(): 0.0}
        assert len(log) == 1 and str(exc) in log[0]
