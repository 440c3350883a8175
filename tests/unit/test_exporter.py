"""cli/exporter.py: the collector of `rpctl metrics` reads the groups at every scrape; a failure is rpctl_up 0;
the endpoint answers GET and HEAD alone, and no slow, silent or huge request holds it up."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Iterator

import pytest
from rpctl.cli import exporter
from rpctl.controller.contract.errors import NotFound, StateError
from rpctl.controller.read import views as read_model

from tests.support import hostile
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


# The endpoint on loopback, with real sockets: what a client that is not Prometheus gets ------------------


@contextlib.contextmanager
def serving() -> Iterator[int]:
    """An exporter of every group on 127.0.0.1 (a port the kernel picks), with a head timeout of
    1 s, for the block; its port."""
    server, thread = exporter.start_exporter("127.0.0.1", 0, exporter.GroupCollector(None, lambda m: None),
                                             head_timeout=1.0)
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def one_group(monkeypatch):
    monkeypatch.setattr(read_model, "read_views", lambda group=None, with_queues=True: [group_view()])


@pytest.fixture
def endpoint(one_group):
    """The port of an exporter (serving()) of one hand-built group."""
    with serving() as port:
        yield port


def ask(port: int, request: bytes, timeout: float = 5.0) -> bytes:
    """Send `request` on a new connection and read the whole answer (to the server's close)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    return answer


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def get(port: int) -> bytes:
    return ask(port, b"GET /metrics HTTP/1.1\r\nHost: rpctl\r\n\r\n")


def test_a_scrape_is_answered_while_a_silent_and_a_trickling_client_are_open(endpoint):
    silent = socket.create_connection(("127.0.0.1", endpoint))
    trickling = socket.create_connection(("127.0.0.1", endpoint))
    stop = threading.Event()

    # A byte every 0.2 s: the head never ends.
    sender = threading.Thread(target=hostile.trickle, args=(trickling, b"GET /metrics HTTP/1.1\r\nX: ", 0.2, stop))
    sender.start()
    try:
        time.sleep(0.3)
        started = time.monotonic()
        answer = get(endpoint)
        assert time.monotonic() - started < 1.0
        assert status_of(answer) == 200 and b"\nrpctl_up 1.0\n" in answer
        # Both are dropped once their second is up: the trickle does not extend it.
        for client in (silent, trickling):
            client.settimeout(3.0)
            assert client.recv(1) == b"", "the server closes a client that did not send its request in time"
    finally:
        stop.set()
        sender.join()
        silent.close()
        trickling.close()


@pytest.mark.parametrize("method", [b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH"])
def test_only_get_and_head_are_answered(endpoint, method):
    answer = ask(endpoint, method + b" /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello")
    assert status_of(answer) == 405 and b"\r\nAllow: GET, HEAD\r\n" in answer, answer


def test_head_gets_the_headers_of_a_scrape_without_its_body(endpoint):
    head, _, body = ask(endpoint, b"HEAD /metrics HTTP/1.0\r\n\r\n").partition(b"\r\n\r\n")
    assert status_of(head) == 200 and body == b""
    length = int(next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")).split(b":")[1])
    assert length > 0


def test_a_huge_header_is_refused_unread_and_the_server_still_answers(endpoint):
    request = b"GET /metrics HTTP/1.1\r\nX-Huge: " + b"a" * (1 << 20) + b"\r\n\r\n"
    try:
        answer = ask(endpoint, request)
    except ConnectionError:
        answer = b""  # closed before all of it was sent: the rest was never read
    assert answer == b"" or status_of(answer) == 431, answer[:200]
    assert status_of(get(endpoint)) == 200


def test_a_malformed_request_is_a_400_and_the_server_still_answers(endpoint):
    # (http.server words the error of a head it cannot read as HTTP/0.9: a page with no status line)
    assert b"Error code: 400" in ask(endpoint, b"GET /metrics HTTP/9.z\r\n\r\n")
    assert status_of(get(endpoint)) == 200


def test_connections_past_the_limit_are_closed_at_once_until_the_silent_ones_time_out(monkeypatch, one_group):
    monkeypatch.setattr(exporter, "MAX_CONNECTIONS", 2)
    with serving() as port:
        silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
        time.sleep(0.2)
        try:
            answer = get(port)
        except ConnectionError:
            answer = b""
        assert answer == b"", "a third connection is closed unanswered"
        time.sleep(1.2)  # the two silent ones are dropped: their slots are free again
        assert status_of(get(port)) == 200
        for s in silent:
            s.close()
