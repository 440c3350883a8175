"""controller/read/prometheus_source.py: the API's JSON -> views (answers a real Prometheus gave,
recorded by tests/kernel/test_read_many_hosts_through_prometheus.py), and the errors of a wrong
URL, a bad selector, no series."""

from __future__ import annotations

import io
import json
import socket
import threading
import time
import urllib.error
import urllib.parse

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from rpctl.controller.contract.errors import InvalidInput, NotFound, RpctlError, WaitTimeout
from rpctl.controller.read import prometheus_source as source

from tests.support import hostile
from tests.support.cli import assert_one_error_line, invoke
from tests.support.prometheus import RECORDED, FakeApi, recorded_answers, recorded_docs, recorded_views


def test_recorded_answers_become_one_view_per_instance_and_group():
    views = recorded_views()
    assert [(g.name, len(g.members)) for g in sorted(views, key=lambda g: g.name)] == [
        ("tcp-7001", 3), ("tcp-7002", 2), ("tcp-7003", 3)]
    assert len({g.instance for g in views}) == 3 and all(g.instance.startswith("127.0.0.1:") for g in views)
    assert all(g.ref == f"{g.instance}/{g.name}" for g in views)
    a = next(g for g in views if g.name == "tcp-7001")
    assert (a.proto, a.addr, a.port, a.mode, a.migration, a.endpoint) == (
        "tcp", "127.0.0.1", 7001, "weighted", True, "tcp:127.0.0.1:7001")
    assert a.prog_id > 0 and a.unmanaged == [] and a.no_live_member == 0
    assert [(m.name, m.state, m.weight, m.queue) for m in a.members] == [
        ("a0", "active", 1, 0), ("a1", "active", 2, 0), ("a2", "active", 1, 0)]
    assert [m.target_share for m in a.members] == [0.25, 0.5, 0.25]
    # Shares of the rates over the window; the counters are the exporter's totals.
    for g in views:
        assert sum(m.observed_share for m in g.members) == pytest.approx(1.0)
        assert all(m.rate > 0 and m.selected > 0 for m in g.members)
        for m in g.members:
            assert abs(m.observed_share - m.target_share) < 0.1, (g.name, m)


def test_a_member_s_state_decides_draining_and_gone():
    answers = json.loads(RECORDED.read_text())
    parsed = {what: source.parse_answer(doc, what) for what, doc in answers.items()}
    states = {"a0": "drained", "a1": "gone", "a2": "draining"}
    for s in parsed["state"]:
        if s.labels["member"] in states:
            s.labels["state"] = states[s.labels["member"]]
    parsed["queue"] = [source.Sample(s.labels, 7.0 if s.labels["member"] == "a2" else s.value) for s in parsed["queue"]]
    a = next(g for g in source.fleet_views(parsed) if g.name == "tcp-7001")
    assert [(m.name, m.state, m.queue) for m in a.members] == [("a0", "drained", 0), ("a1", "gone", 0),
                                                                ("a2", "draining", 7)]
    assert [m.target_share for m in a.members] == [0.0, 0.0, 0.0]  # no active member: nothing to aim at


def test_read_fleet_through_http():
    with FakeApi(recorded_answers()) as api:
        views = source.read_fleet(source.PrometheusApi(api.url))
    assert len(views) == 3
    assert {path for path, _ in api.seen} == {"/api/v1/query"}
    assert len(api.seen) == len(source.queries("", "1m"))


def test_match_and_window_go_into_every_query():
    q = source.queries(source.parse_match('{instance="h:1", group=~"web.*"}'), "5m")
    assert all('instance="h:1", group=~"web.*"' in expr for expr in q.values())
    assert "[5m]" in q["rates"]
    assert source.parse_match('instance="h:1"') == 'instance="h:1"'
    assert source.parse_match(None) == ""


@pytest.mark.parametrize("window", ["", "1", "5x", "1m ", "m"])
def test_a_bad_window_is_refused(window):
    with pytest.raises(InvalidInput, match="not a Prometheus duration"):
        source.parse_window(window)


def test_no_rpctl_series_is_not_found():
    empty = json.dumps({"status": "success", "data": {"resultType": "vector", "result": []}}).encode()
    with FakeApi(lambda expr: (200, empty)) as api, pytest.raises(NotFound, match="no rpctl series"):
        source.read_fleet(source.PrometheusApi(api.url), match='{instance="nowhere:1"}')


def test_a_bad_selector_is_invalid_input_with_prometheus_reason():
    bad = json.dumps({"status": "error", "errorType": "bad_data", "error": "parse error: unexpected"}).encode()
    with FakeApi(lambda expr: (400, bad)) as api, pytest.raises(InvalidInput, match="parse error: unexpected"):
        source.read_fleet(source.PrometheusApi(api.url), match='{instance=="x"}')


def test_a_server_that_is_not_prometheus():
    with FakeApi(lambda expr: (404, b"<html>not here</html>")) as api, pytest.raises(
            InvalidInput, match="is not a Prometheus server .HTTP 404"):
        source.read_fleet(source.PrometheusApi(api.url))
    with FakeApi(lambda expr: (200, b"<html>a web page</html>")) as api, pytest.raises(
            InvalidInput, match="is not a Prometheus server"):
        source.read_fleet(source.PrometheusApi(api.url))


def test_an_unreachable_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there
    with pytest.raises(RpctlError, match="cannot reach Prometheus at .*refused"):
        source.PrometheusApi(f"http://127.0.0.1:{port}").query("up")


def test_a_server_that_does_not_answer_in_time():
    def opener(request, timeout):
        raise urllib.error.URLError(socket.timeout("timed out"))

    with pytest.raises(WaitTimeout, match="did not answer within 2s"):
        source.PrometheusApi("http://prometheus:9090", timeout=2, opener=opener).query("up")


@pytest.mark.parametrize("url", ["prometheus:9090", "ftp://x", "http://"])
def test_a_url_that_is_not_http(url):
    with pytest.raises(InvalidInput, match="is not the http"):
        source.PrometheusApi(url)


def test_a_group_whose_exporter_went_down_is_shown_unreachable():
    answers = json.loads(RECORDED.read_text())
    parsed = {what: source.parse_answer(doc, what) for what, doc in answers.items()}
    gone_host = parsed["info"][0].labels
    parsed["info"] = parsed["info"][1:]  # its series went stale
    parsed["unreachable"] = [source.Sample(dict(gone_host), 1.0)]
    views = source.fleet_views(parsed)
    (down,) = [g for g in views if g.unreachable]
    assert (down.instance, down.name, down.members) == (gone_host["instance"], gone_host["group"], [])
    assert len(views) == 3 and sum(g.unreachable for g in views) == 1
    # A group still scraped is never unreachable, whatever the lookback says.
    parsed["unreachable"] = [source.Sample(dict(s.labels), 1.0) for s in parsed["info"]]
    assert not any(g.unreachable for g in source.fleet_views(parsed))


def test_an_adaptive_group_and_a_throttled_member_come_through():
    answers = json.loads(RECORDED.read_text())
    parsed = {what: source.parse_answer(doc, what) for what, doc in answers.items()}
    for s in parsed["state"]:
        if s.labels["member"] == "a1":
            s.labels["state"] = "throttled"
    for samples in parsed.values():
        for s in samples:
            if s.labels.get("group") == "tcp-7001" and "migration" in s.labels:
                s.labels["adaptive"] = "true"
    a = next(g for g in source.fleet_views(parsed) if g.name == "tcp-7001")
    assert a.adaptive
    assert [(m.name, m.state) for m in a.members] == [("a0", "active"), ("a1", "throttled"), ("a2", "active")]
    assert not any(g.adaptive for g in source.fleet_views(parsed) if g.name != "tcp-7001")


def test_rpctl_member_throttled_says_which_member_is_throttled():
    from tests.support.prometheus import throttling_docs

    docs = throttling_docs("tcp-7001", "a1")
    parsed = {what: source.parse_answer(doc, what) for what, doc in docs.items()}
    views = source.fleet_views(parsed)
    a = next(g for g in views if g.name == "tcp-7001")
    assert a.adaptive and [(m.name, m.state, m.throttled) for m in a.members] == [
        ("a0", "active", None), ("a1", "throttled", source.THROTTLED_REASON), ("a2", "active", None)]
    assert not any(g.adaptive or any(m.throttled for m in g.members) for g in views if g.name != "tcp-7001")
    # Released: the gauge at 0 wins over a state series of the scrape before.
    for s in parsed["state"]:
        if s.labels["member"] == "a1":
            s.labels["state"] = "throttled"
    parsed["throttled"] = [source.Sample(dict(s.labels), 0.0) for s in parsed["throttled"]]
    a = next(g for g in source.fleet_views(parsed) if g.name == "tcp-7001")
    assert [m.throttled for m in a.members] == [None, None, None]


# Hostile answers: wrong JSON, wrong types, huge, slow ----------------------------------------------

DOCS = recorded_docs()


@given(st.sampled_from(sorted(DOCS)).flatmap(lambda what: st.tuples(st.just(what), hostile.changed_json(DOCS[what])
                                                                     | hostile.json_values)))
def test_any_answer_document_is_samples_and_views_or_refused_in_one_line(case):
    what, doc = case
    try:
        samples = source.parse_answer(doc, what) if isinstance(doc, dict) else None
    except RpctlError as e:
        assert "\n" not in str(e) and len(str(e)) < 1000
        return
    answers = {w: source.parse_answer(d, w) for w, d in DOCS.items()}
    answers[what] = samples or []
    for g in source.fleet_views(answers):
        assert len(g.unmanaged or []) <= source.MAX_UNMANAGED
        for m in g.members:
            assert 0 <= m.weight <= source.MAX_WEIGHT and 0 <= m.target_share <= 1
            assert m.observed_share is None or 0 <= m.observed_share <= 1


def _answering(body: bytes):
    def opener(request, timeout):
        return io.BytesIO(body)

    return opener


@given(hostile.mutated(json.dumps(DOCS["weight"]).encode()) | hostile.json_values.map(lambda v: json.dumps(v).encode())
       | st.integers(1, 200_000).map(lambda n: b"[" * n + b"]" * n) | st.binary(max_size=64))
@example(b"[" * 100_000 + b"]" * 100_000)  # nested past the JSON decoder's recursion
def test_any_body_is_samples_or_refused_in_one_line(body):
    try:
        source.PrometheusApi("http://prometheus:9090", opener=_answering(body)).query("up")
    except RpctlError as e:
        assert "\n" not in str(e)


def test_a_huge_answer_is_refused():
    api = source.PrometheusApi("http://prometheus:9090", opener=_answering(b" " * (2 << 20)), max_answer=1 << 20)
    with pytest.raises(InvalidInput, match="answered more than 1048576 bytes"):
        api.query("up")


@pytest.fixture
def trickling():
    """A server on loopback that answers a byte every 0.1 s, for ever: within any socket timeout."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    stop = threading.Event()

    def serve():
        conn, _ = server.accept()
        with conn:
            hostile.trickle(conn, b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 100, 0.1, stop)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    server.close()
    t.join(5)


def test_a_server_that_trickles_its_answer_times_out_in_one_line(trickling):
    api = source.PrometheusApi(trickling, timeout=0.5)
    outcome: list = []
    t = threading.Thread(target=lambda: outcome.append(_raised(api.query, "up")), daemon=True)
    start = time.monotonic()
    t.start()
    t.join(10)
    assert outcome, "the query still waits after 10 s"
    assert isinstance(outcome[0], WaitTimeout) and time.monotonic() - start < 3, outcome
    assert str(outcome[0]) == f"Prometheus at {trickling} did not answer within 0.5s"


def _raised(fn, *args):
    try:
        fn(*args)
    except Exception as e:  # noqa: BLE001 - what the test looks at
        return e
    return None


@hostile.with_fixtures
@given(body=hostile.mutated(json.dumps(DOCS["state"]).encode()) | hostile.changed_json(DOCS["state"]).map(
    lambda d: json.dumps(d).encode()))
def test_status_through_a_hostile_prometheus_says_one_line_and_its_exit_code(body, cli_without_system, monkeypatch):
    """The command line over the answers of a Prometheus whose answer to one query is damaged
    (in memory: the HTTP of it is the trickling server's test)."""
    recorded = recorded_answers()
    state = source.queries("", "1m")["state"]

    def opener(request, timeout):
        expr = urllib.parse.parse_qs(request.data.decode())["query"][0]
        return io.BytesIO(body if expr == state else recorded(expr)[1])

    monkeypatch.setattr(source, "urlopen_within", opener)
    status, out, err = invoke(["status", "--prometheus", "http://prometheus:9090", "--json"])
    if status == 0:
        assert json.loads(out)
    else:
        assert status in (1, 3, 4) and out == ""
        line = assert_one_error_line(err)
        assert "unexpected error" not in line, line


def _views(docs: dict) -> list:
    return source.fleet_views({what: source.parse_answer(doc, what) for what, doc in docs.items()})


def test_server_generations_come_through_as_a_local_read_builds_them():
    from tests.support.prometheus import generation_docs

    # a0 in generation 1, drained; a1 and a2 (weights 2 and 1) in generation 2, serving.
    docs = generation_docs("tcp-7001", {"a0": 1, "a1": 2, "a2": 2}, states={"a0": "drained"})
    views = _views(docs)
    a = next(g for g in views if g.name == "tcp-7001")
    assert [(m.name, m.generation) for m in a.members] == [("a0", 1), ("a1", 2), ("a2", 2)]
    assert [(gen.number, str(gen.state), gen.share, gen.members, gen.verdict) for gen in a.generations] == [
        (1, "drained", 0.0, ("a0",), None), (2, "serving", 1.0, ("a1", "a2"), None)]
    assert all(g.generations == [] for g in views if g.name != "tcp-7001")


def test_a_canary_generation_comes_through():
    from tests.support.prometheus import generation_docs

    a = next(g for g in _views(generation_docs("tcp-7001", {"a0": 1, "a1": 2, "a2": 2}, canary=2))
             if g.name == "tcp-7001")
    assert [(gen.number, str(gen.state), gen.share) for gen in a.generations] == [
        (1, "serving", 0.25), (2, "canary", 0.75)]
    assert [m.canary for m in a.members] == [False, True, True]
