"""`rpctl metrics`: group views -> metric families, the collector, the command.

The families are read back through prometheus_client's own text format and
parser, so what is checked is what Prometheus would store.  The group views
are test_cli's (four members, one per state); no privileges and no bpffs:
the only real thing is an HTTP server on loopback.
"""

from __future__ import annotations

import io
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from rpctl.cli import metrics_cmd
from rpctl.cli.common import Environment
from rpctl.cli.main import run
from rpctl.cli.metrics_families import STATES, families
from rpctl.controller import group as groups
from rpctl.controller import views as read_model
from rpctl.controller.errors import ExitStatus, NotFound, StateError
from tests.support.views import STATES as MEMBER_STATES
from tests.support.cli import assert_one_error_line, invoke
from tests.support.views import group_view, member

README = Path(__file__).resolve().parents[2] / "README.md"
NAME_RE = re.compile(r"^rpctl_[a-z][a-z0-9_]*$")


@pytest.fixture(autouse=True)
def no_system(refuse_system, monkeypatch):
    monkeypatch.setattr(read_model, "read_views", refuse_system)
    monkeypatch.setattr(groups, "resolve_group", refuse_system)


class _Fixed:
    def __init__(self, metrics):
        self.metrics = metrics

    def collect(self):
        return self.metrics


def scrape(metrics) -> dict:
    """Families through the text format and back: {family name: family}."""
    registry = CollectorRegistry()
    registry.register(_Fixed(metrics))
    text = generate_latest(registry).decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(family, name: str = None) -> dict:
    """{sorted (label, value) pairs: value} of the family's samples named `name` (default: the family's name)."""
    name = name or family.name
    return {tuple(sorted(s.labels.items())): s.value for s in family.samples if s.name == name}


def by_member(family, name: str = None) -> dict:
    return {dict(k)["member"]: v for k, v in samples(family, name).items()}


# The mapping -----------------------------------------------------------------------


def test_counters_gauges_and_info_of_a_tcp_group():
    view = group_view()
    got = scrape(families([view]))

    assert got["rpctl_up"].type == "gauge" and samples(got["rpctl_up"]) == {(): 1.0}
    for family, field in (("rpctl_member_selected", "selected"), ("rpctl_member_fallback", "fallback"),
                          ("rpctl_member_migrated", "migrated"), ("rpctl_member_pinned", "pinned")):
        assert got[family].type == "counter"
        assert by_member(got[family], family + "_total") == {m.name: getattr(m, field) for m in view.members}
        for labels in samples(got[family], family + "_total"):
            assert dict(labels)["group"] == "tcp-18080" and set(dict(labels)) == {"group", "member"}
    # test_cli's members have different counters each: a mix-up of members would show.
    assert len(set(by_member(got["rpctl_member_selected"], "rpctl_member_selected_total").values())) == 4

    assert by_member(got["rpctl_member_weight"]) == {m.name: m.weight for m in view.members}
    assert by_member(got["rpctl_member_queued_connections"]) == {m.name: m.queue for m in view.members}
    assert samples(got["rpctl_member_queued_bytes"]) == {}, "a TCP group has no bytes queued"

    (info_labels,) = samples(got["rpctl_group_info"])
    assert dict(info_labels) == {
        "group": "tcp-18080", "endpoint": "tcp:127.0.0.1:18080", "protocol": "tcp", "mode": "weighted",
        "program_id": "42", "migration": "true",
    }
    assert samples(got["rpctl_group_info"])[info_labels] == 1.0
    for family, value in (("rpctl_group_slot_misses", 5), ("rpctl_group_no_live_member", 6),
                          ("rpctl_group_pin_fallbacks", 7), ("rpctl_group_pin_unassigned", 8),
                          ("rpctl_group_rss_unhashed", 9)):
        assert got[family].type == "counter"
        assert samples(got[family], family + "_total") == {(("group", "tcp-18080"),): value}


def test_state_has_one_series_per_state_and_one_is_set():
    got = scrape(families([group_view()]))["rpctl_member_state"]
    assert got.type == "gauge"
    assert set(STATES) == {"active", "draining", "drained", "gone"}
    series = samples(got)
    assert len(series) == 4 * len(STATES)
    for name, state in MEMBER_STATES.items():
        mine = {dict(k)["state"]: v for k, v in series.items() if dict(k)["member"] == name}
        assert mine == {s: (1.0 if s == state else 0.0) for s in STATES}, name


def test_udp_queue_is_in_bytes_and_an_unknown_queue_is_left_out():
    view = group_view(
        members=[member(0, "dns-1", queue=512), member(1, "dns-2", gone=True, queue=None)],
        proto="udp", family=socket.AF_INET6, addr="::1", port=53, migration=False,
    )
    got = scrape(families([view]))
    assert by_member(got["rpctl_member_queued_bytes"]) == {"dns-1": 512}
    assert samples(got["rpctl_member_queued_connections"]) == {}
    (info_labels,) = samples(got["rpctl_group_info"])
    info = dict(info_labels)
    assert (info["endpoint"], info["protocol"], info["migration"]) == ("udp:[::1]:53", "udp", "false")


def test_several_groups_are_told_apart_by_their_label():
    web, dns = group_view(name="web"), group_view(name="dns", members=[member(0, "worker-1", selected=9)])
    got = scrape(families([web, dns]))["rpctl_member_selected"]
    series = {(dict(k)["group"], dict(k)["member"]): v for k, v in samples(got, "rpctl_member_selected_total").items()}
    assert series[("dns", "worker-1")] == 9 and series[("web", "worker-1")] == 100
    assert len(series) == 5


def test_not_read_is_up_0_and_nothing_else():
    got = scrape(families([], up=False))
    assert samples(got["rpctl_up"]) == {(): 0.0}
    assert all(not f.samples for name, f in got.items() if name != "rpctl_up")


def test_no_group_lists_every_family_without_samples():
    got = scrape(families([]))
    assert samples(got["rpctl_up"]) == {(): 1.0}
    assert set(got) == set(scrape(families([group_view()])))


def test_names_follow_the_conventions_and_are_documented():
    readme = README.read_text()
    help_text = metrics_cmd.DESCRIPTION
    for f in families([group_view()]):
        assert NAME_RE.match(f.name), f.name
        assert f.documentation, f.name
        exposed = f.name + "_total" if f.type == "counter" else f.name + "_info" if f.type == "info" else f.name
        assert not (f.type != "counter" and exposed.endswith("_total")), exposed
        assert f"`{exposed}`" in readme, f"README.md does not list {exposed}"
        assert exposed in help_text, f"rpctl metrics --help does not list {exposed}"


# The collector ----------------------------------------------------------------------


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
    collector = metrics_cmd.GroupCollector("web", log.append)
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
        got = scrape(metrics_cmd.GroupCollector(None, log.append).collect())
        assert samples(got["rpctl_up"]) == {(): 0.0}
        assert len(log) == 1 and str(exc) in log[0]


# The command ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "listen, says",
    [
        ("9464", "use HOST:PORT"),
        ("localhost:9464", "literal address"),
        ("::1:9464", "brackets"),
        ("127.0.0.1:70000", "0..65535"),
        ("127.0.0.1:http", "is not a number"),
    ],
)
def test_bad_listen_exits_4_in_one_line_before_reading_anything(listen, says):
    status, out, err = invoke(["metrics", "--listen", listen])
    assert status == ExitStatus.INVALID == 4, err
    assert out == ""
    line = assert_one_error_line(err)
    assert line.startswith("rpctl: metrics: --listen ") and says in line


def test_listen_is_required():
    status, _, err = invoke(["metrics"])
    assert status == ExitStatus.USAGE
    assert "--listen" in assert_one_error_line(err)


def test_unknown_group_exits_3(monkeypatch):
    def resolve_group(name=None, layout=None):
        raise NotFound(f"no group {name!r} in this network namespace")

    monkeypatch.setattr(groups, "resolve_group", resolve_group)
    status, _, err = invoke(["metrics", "--listen", "127.0.0.1:0", "--group", "web"])
    assert status == ExitStatus.NOT_FOUND
    assert assert_one_error_line(err) == "rpctl: no group 'web' in this network namespace"


def test_address_in_use_exits_4(monkeypatch):
    monkeypatch.setattr(read_model, "read_views", lambda group=None, with_queues=True: [])
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        status, _, err = invoke(["metrics", "--listen", f"127.0.0.1:{port}"])
    assert status == ExitStatus.INVALID
    line = assert_one_error_line(err)
    assert f"listen on 127.0.0.1:{port}" in line and "in use" in line


def test_serves_until_sigterm_and_exits_0(monkeypatch):
    """In-process: a real HTTP server on loopback, scraped twice, then SIGTERM to this thread."""
    reads = []

    def views(group=None, with_queues=True):
        view = group_view()
        view.members[0].selected = 1000 + len(reads)  # a fresh read at every scrape
        reads.append(group)
        return [view]

    monkeypatch.setattr(read_model, "read_views", views)
    env = Environment(stdout=io.StringIO(), stderr=io.StringIO())
    main_thread = threading.get_ident()
    scraped = []

    def client():
        deadline = time.monotonic() + 10
        while not (found := re.search(r"serving .* on http://127\.0\.0\.1:(\d+)/metrics", env.stderr.getvalue())):
            if time.monotonic() > deadline:
                return  # the command ended (or hangs): the asserts below say which
            time.sleep(0.01)
        try:
            for _ in range(2):
                with urllib.request.urlopen(f"http://127.0.0.1:{found.group(1)}/metrics", timeout=5) as reply:
                    scraped.append((reply.status, reply.headers["Content-Type"], reply.read().decode()))
        finally:
            # The command blocks SIGTERM and waits for it: this is `kill`, aimed at its thread.
            signal.pthread_kill(main_thread, signal.SIGTERM)

    t = threading.Thread(target=client)
    t.start()
    status = run(["metrics", "--listen", "127.0.0.1:0"], env)
    t.join(10)
    assert status == 0, env.stderr.getvalue()
    assert [s for s, _, _ in scraped] == [200, 200]
    assert scraped[0][1].startswith("text/plain; version=0.0.4")
    values = [by_member({f.name: f for f in text_string_to_metric_families(text)}["rpctl_member_selected"],
                        "rpctl_member_selected_total")["worker-1"] for _, _, text in scraped]
    assert values == [1001, 1002]  # read at start-up (1000), then once per scrape
    assert "process_cpu_seconds_total" in scraped[0][2]
    lines = env.stderr.getvalue().splitlines()
    assert lines[-1] == "rpctl metrics: stopped (SIGTERM)"
    assert env.stdout.getvalue() == ""


def test_other_commands_do_not_import_prometheus_client():
    code = (
        "import sys\n"
        "from rpctl.cli.main import run\n"
        "run(['status', '--help'])\n"
        "print(sorted(m for m in sys.modules if m.startswith(('prometheus_client', 'rpctl.cli.metrics_families'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.splitlines()[-1] == "[]"
