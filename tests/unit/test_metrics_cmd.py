"""`rpctl metrics`: the command's options and life (its collector is test_exporter's).

No privileges and no bpffs: the only real thing is an HTTP server on loopback."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families
from rpctl.cli.main import run
from rpctl.controller.contract.errors import ExitStatus, NotFound
from rpctl.controller.read import views as read_model
from rpctl.controller.store import group as groups

from tests.support.cli import assert_one_error_line, captured, invoke
from tests.support.metrics import by_member
from tests.support.views import group_view

pytestmark = pytest.mark.usefixtures("groups_unreadable")


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
    env = captured()  # read while the command runs: the client waits for its address on stderr
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
