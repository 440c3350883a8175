"""A real Prometheus server for kernel tests: Debian's /usr/bin/prometheus started by the
test on loopback (a free port, its own config and a temporary storage folder), never the
packaged service, and stopped after it."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Optional

import pytest

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "contrib" / "prometheus" / "rpctl-rules.yml"
DASHBOARD = REPO / "contrib" / "grafana" / "rpctl.json"


def dashboard_expressions() -> list[str]:
    """Every query of the Grafana dashboard: its panels' and its variables'."""
    doc = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]
    exprs += [v["query"] for v in doc["templating"]["list"] if v["type"] == "query"]
    return exprs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Prometheus:
    """`with Prometheus(tmp, targets, interval=1.0) as prom:` scrapes `targets` (host:port) as
    the job "rpctl" every `interval` seconds and evaluates the shipped rules as often."""

    def __init__(self, tmp: Path, targets: list[str], interval: float = 1.0, rules: Optional[Path] = RULES):
        exe = shutil.which("prometheus")
        if exe is None:
            pytest.fail("prometheus is missing: install Debian's prometheus package "
                        "(./scripts/provision.sh --with-tests)", pytrace=False)
        self.exe = exe
        self.tmp = tmp
        self.interval = interval
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        every = f"{int(interval * 1000)}ms"
        config = {
            "global": {"scrape_interval": every, "evaluation_interval": every, "scrape_timeout": every},
            "rule_files": [str(rules)] if rules else [],
            "scrape_configs": [{"job_name": "rpctl", "static_configs": [{"targets": targets}]}],
        }
        self.config = tmp / "prometheus.yml"
        self.config.write_text(json.dumps(config))  # YAML is a superset of JSON
        self.log = tmp / "prometheus.log"
        self.proc: Optional[subprocess.Popen] = None

    def __enter__(self) -> Prometheus:
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [self.exe, f"--config.file={self.config}", f"--storage.tsdb.path={self.tmp / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"prometheus exited {self.proc.returncode}: {self.log.read_text()[-2000:]}",
                            pytrace=False)
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as reply:
                    if reply.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.2)
        self.__exit__(None, None, None)
        pytest.fail(f"prometheus not ready within 30s: {self.log.read_text()[-2000:]}", pytrace=False)

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def api(self, path: str, **params: str) -> dict:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=5) as reply:
            doc = json.load(reply)
        assert doc["status"] == "success", doc
        return doc["data"]

    def alerts(self, name: str) -> list[dict]:
        """The alerts named `name`, pending or firing, as /api/v1/alerts lists them."""
        return [a for a in self.api("alerts")["alerts"] if a["labels"].get("alertname") == name]

    def targets_up(self) -> int:
        return sum(1 for t in self.api("targets")["activeTargets"] if t["health"] == "up")


class FakeApi:
    """An HTTP server on loopback answering /api/v1/query with `respond(expr) -> (HTTP status, body)`:
    recorded answers of a real Prometheus, or what a wrong URL answers."""

    def __init__(self, respond):
        import http.server
        import threading

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                expr = urllib.parse.parse_qs(self.rfile.read(length).decode()).get("query", [""])[0]
                seen.append((self.path, expr))
                code, body = respond(expr)
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        seen: list[tuple[str, str]] = []
        self.seen = seen
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeApi:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


RECORDED = REPO / "tests" / "unit" / "data" / "prometheus_answers.json"

# SYNTHETIC answers, not recorded: queries added after the recording, answered as the recorded
# Prometheus would have.  Its groups were not adaptive and had no server generations, and an
# exporter has rpctl_member_throttled for adaptive groups only, the generation series for groups
# with generations only: empty vectors.
SYNTHETIC = {what: {"status": "success", "data": {"resultType": "vector", "result": []}}
             for what in ("throttled", "generation", "canary")}


def recorded_docs() -> dict:
    """The API's answer documents by query name (queries()' keys): recorded, plus SYNTHETIC."""
    return {**json.loads(json.dumps(SYNTHETIC)), **json.loads(RECORDED.read_text())}  # copies: tests change them


def recorded_answers(match: str = "", window: str = "1m", docs: Optional[dict] = None):
    """respond() for FakeApi: the answers a real Prometheus gave to queries(match, window) while
    it scraped the three exporters of tests/kernel/test_read_many_hosts_through_prometheus.py
    (three groups, 8 members, after their load), or `docs` (recorded_docs() changed by a test)."""
    from rpctl.controller.read.prometheus_source import queries

    answers = recorded_docs() if docs is None else docs
    by_expr = {expr: answers[what] for what, expr in queries(match, window).items()}

    def respond(expr: str):
        doc = by_expr.get(expr)
        if doc is None:
            return 400, json.dumps({"status": "error", "errorType": "bad_data", "error": f"unknown {expr}"}).encode()
        return 200, json.dumps(doc).encode()

    return respond


def throttling_docs(group: str, throttled: str) -> dict:
    """recorded_docs() changed (SYNTHETIC, for tests): `group` adaptive, its member `throttled`
    throttled (rpctl_member_throttled 1, its other members 0), as its exporter would say."""
    docs = recorded_docs()
    for s in docs["info"]["data"]["result"]:
        if s["metric"]["group"] == group:
            s["metric"]["adaptive"] = "true"
    docs["throttled"]["data"]["result"] = [
        {"metric": {**s["metric"], "__name__": "rpctl_member_throttled"},
         "value": [s["value"][0], "1" if s["metric"]["member"] == throttled else "0"]}
        for s in docs["weight"]["data"]["result"] if s["metric"]["group"] == group]
    return docs


def generation_docs(group: str, generations: dict[str, int], canary: Optional[int] = None,
                    states: Optional[dict[str, str]] = None) -> dict:
    """recorded_docs() changed (SYNTHETIC, for tests): the members of `group` in server
    generations (member name -> number), generation `canary` a canary, members in `states`
    (member name -> state) in that state, as its exporter says."""
    docs = recorded_docs()
    for s in docs["state"]["data"]["result"]:
        if s["metric"]["group"] == group and s["metric"]["member"] in (states or {}):
            s["metric"]["state"] = states[s["metric"]["member"]]
    members = [s for s in docs["weight"]["data"]["result"] if s["metric"]["group"] == group]
    docs["generation"]["data"]["result"] = [
        {"metric": {**s["metric"], "__name__": "rpctl_member_server_generation"},
         "value": [s["value"][0], str(generations[s["metric"]["member"]])]}
        for s in members if s["metric"]["member"] in generations]
    if canary is not None:
        labels = {k: v for k, v in members[0]["metric"].items() if k != "member"}
        docs["canary"]["data"]["result"] = [{
            "metric": {**labels, "__name__": "rpctl_generation_state", "generation": str(canary), "state": "canary"},
            "value": [members[0]["value"][0], "1"]}]
    return docs


def recorded_views():
    """The views of the recorded answers (three instances, one group each)."""
    from rpctl.controller.read import prometheus_source

    return prometheus_source.fleet_views(
        {what: prometheus_source.parse_answer(doc, what) for what, doc in recorded_docs().items()})
