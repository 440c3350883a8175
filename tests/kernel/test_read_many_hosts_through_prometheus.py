"""Many hosts through Prometheus: a real Prometheus (Debian's package, started by the test on
loopback) scrapes three exporters that stand for three hosts, each `rpctl metrics --group G`
for a group of its own under load, and evaluates the shipped rules.

`rpctl status --prometheus` must show every host's members with the shares the member
sockets were served, a drain within two scrape intervals, and RpctlNoActiveMember must
become pending when every member of one host's group is gone; a host whose exporter
stops stays in the view, marked.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.support.launched import stderr_line, wait_until
from tests.support.prometheus import Prometheus, dashboard_expressions, free_port
from tests.support.traffic import shares, tcp_connections

pytestmark = pytest.mark.kernel

INTERVAL = 1.0  # Prometheus' scrape and rule evaluation interval, seconds
# Three "hosts": a port (a group) each, its members' weights, and connections sent.
HOSTS = {"a": (7001, (1, 2, 1)), "b": (7002, (1, 1)), "c": (7003, (3, 1, 1))}
CONNECTIONS = 900


def fleet(rpctl, url: str, *args: str) -> dict:
    return json.loads(rpctl.ok("status", "--prometheus", url, "--json", *args))


def test_three_hosts_through_prometheus(netns, rpctl, make_members, tmp_path):
    started = time.monotonic()
    members, exporters, instance = {}, [], {}
    try:
        for host, (port, weights) in HOSTS.items():
            m = members[host] = make_members(port=port)
            for i, weight in enumerate(weights):
                rpctl.ok(*m.register_args(f"{host}{i}", m.add(), weight=weight))
            listen = f"127.0.0.1:{free_port()}"
            instance[host] = listen
            proc = rpctl.subprocess("metrics", "--group", f"tcp-{port}", "--listen", listen)
            exporters.append(proc)
            stderr_line(proc, "serving", 30)

        with Prometheus(tmp_path, list(instance.values()), interval=INTERVAL) as prom:
            wait_until("Prometheus to scrape the three exporters", lambda: prom.targets_up() == 3, timeout=15)
            served = {}
            for seed, (host, m) in enumerate(members.items()):
                counts, failures = tcp_connections(m, CONNECTIONS, seed=seed)
                assert failures == 0
                served[host] = shares(counts, len(m.socks))
            time.sleep(2.5 * INTERVAL)  # the counters after the load are scraped

            # Every host's members, with the shares their sockets were served (rate() over a
            # minute that holds the whole load: the first scrape saw every counter at 0).
            doc = fleet(rpctl, prom.url, "--window", "1m")
            assert doc["window"] == "1m"
            by_instance = {g["instance"]: g for g in doc["groups"]}
            assert set(by_instance) == set(instance.values())
            for host, (port, weights) in HOSTS.items():
                group = by_instance[instance[host]]
                assert group["name"] == f"tcp-{port}" and group["port"] == port
                got = {m["name"]: m for m in group["members"]}
                assert set(got) == {f"{host}{i}" for i in range(len(weights))}
                for i, weight in enumerate(weights):
                    m = got[f"{host}{i}"]
                    assert m["state"] == "active" and m["weight"] == weight
                    assert m["target_share"] == pytest.approx(weight / sum(weights), abs=1e-6)
                    assert abs(m["observed_share"] - served[host][i]) <= 0.05, (host, i, m, served[host])
                    assert m["rate"] > 0 and m["queue"] == 0

            # The shipped rules evaluate without error on real series, and every expression of the
            # Grafana dashboard runs (its variables standing for every instance and group).
            rules = [r for g in prom.api("rules")["groups"] for r in g["rules"]]
            assert rules and all(r["health"] == "ok" for r in rules), [r for r in rules if r["health"] != "ok"]
            placed = prom.api("query", query="rpctl:member_observed_share:ratio_rate1m")["result"]
            assert len(placed) == sum(len(weights) for _, weights in HOSTS.values())
            for expr in dashboard_expressions():
                if not expr.startswith("label_values("):  # Grafana's own function, not PromQL
                    prom.api("query", query=expr.replace("$instance", ".*").replace("$group", ".*"))

            # The dashboard over the same server: one frame, every host.
            frame = rpctl.ok("dashboard", "--prometheus", prom.url, "--frames", "1")
            assert all(f"{listen}  tcp-" in frame for listen in instance.values()), frame

            # A drain on host a shows within two scrape intervals.
            rpctl.ok("drain", "a0", "--group", "tcp-7001")
            drained_at = time.monotonic()
            only_a = f'{{instance="{instance["a"]}"}}'

            def a0_state():
                (group,) = fleet(rpctl, prom.url, "--match", only_a)["groups"]
                return {m["name"]: m["state"] for m in group["members"]}["a0"] in ("draining", "drained")

            wait_until("the drain of a0 in Prometheus", a0_state, timeout=10, interval=0.05)
            seen_after = time.monotonic() - drained_at
            assert seen_after <= 2 * INTERVAL, f"drain seen after {seen_after:.2f}s"

            # Every member of host c's group dies: RpctlNoActiveMember becomes pending, for c only.
            assert prom.alerts("RpctlNoActiveMember") == []
            members["c"].close()

            def pending():
                return [a for a in prom.alerts("RpctlNoActiveMember") if a["state"] in ("pending", "firing")]

            (alert,) = wait_until("RpctlNoActiveMember pending", pending, timeout=10, interval=0.2)
            assert alert["labels"]["instance"] == instance["c"] and alert["labels"]["group"] == "tcp-7003"
            (group,) = fleet(rpctl, prom.url, "--match", f'{{instance="{instance["c"]}"}}')["groups"]
            assert {m["state"] for m in group["members"]} == {"gone"}

            # Host b's exporter stops: its group stays in the view, marked, without figures.
            exporters[1].kill()

            def b_down():
                groups = {g["instance"]: g for g in fleet(rpctl, prom.url)["groups"]}
                return not groups[instance["b"]]["exporter_up"] and groups[instance["b"]]

            down = wait_until("host b's exporter down in the view", b_down, timeout=10, interval=0.2)
            assert down["name"] == "tcp-7002" and down["members"] == []
    finally:
        for proc in exporters:
            proc.kill()
            proc.communicate(timeout=10)
    assert time.monotonic() - started < 60


def test_server_generations_through_prometheus(netns, rpctl, tmp_path):
    """A group whose file says `generations = "newest"`: a second server started beside the
    first is generation 2 and takes all new work, the first drains.  Read through a real
    Prometheus, `rpctl status --prometheus` shows each member's generation and each
    generation's state and share as `rpctl status` does on the host; so it does when the
    file makes generation 2 a canary."""
    from rpctl.cli.demo import worker as demo_worker
    from rpctl.controller.kernel import discover

    port = 7004
    procs, exporter = [demo_worker.spawn("v1", f"127.0.0.1:{port}")[0]], None
    try:
        exe = discover.identity(procs[0].pid).exe
        path = tmp_path / "rpctl.toml"
        path.write_text(f'[[group]]\nname = "web"\nlisten = "tcp:127.0.0.1:{port}"\nadopt = {{ exe = "{exe}" }}\n'
                        'names = "v-{i}"\ngenerations = "newest"\n')
        rpctl.ok("apply", "-c", path)
        procs.append(demo_worker.spawn("v2", f"127.0.0.1:{port}")[0])  # a second server: its own master
        rpctl.ok("apply", "-c", path)
        (local,) = json.loads(rpctl.ok("status", "--json"))["groups"]
        assert [(g["generation"], g["state"], g["share"]) for g in local["server_generations"]] == [
            (1, "drained", 0.0), (2, "serving", 1.0)], local

        listen = f"127.0.0.1:{free_port()}"
        exporter = rpctl.subprocess("metrics", "--group", "web", "--listen", listen)
        stderr_line(exporter, "serving", 30)
        with Prometheus(tmp_path, [listen], interval=INTERVAL) as prom:
            wait_until("Prometheus to scrape the exporter", lambda: prom.targets_up() == 1, timeout=15)

            def read():
                code, out, _ = rpctl("status", "--prometheus", prom.url, "--json")  # 3: not scraped yet
                groups = json.loads(out)["groups"] if code == 0 else []
                return groups[0] if groups and groups[0]["server_generations"] else None

            group = wait_until("the generations in Prometheus", read, timeout=15, interval=0.2)
            assert group["server_generations"] == local["server_generations"], (group, local)
            assert {m["name"]: m["server_generation"] for m in group["members"]} == {
                m["name"]: m["server_generation"] for m in local["members"]} == {"v-1": 1, "v-2": 2}
            text = rpctl.ok("status", "--prometheus", prom.url)
            assert "generation 1: drained, 0.0% of new work (v-1): safe to stop" in text, text
            assert "generation 2: serving, 100.0% of new work (v-2)" in text, text

            # The file makes generation 2 a canary: a role the members' states do not tell.
            path.write_text(path.read_text().replace('"newest"', "{ canary = 20 }"))
            rpctl.ok("apply", "-c", path)
            (local,) = json.loads(rpctl.ok("status", "--json"))["groups"]
            assert [(g["generation"], g["state"]) for g in local["server_generations"]] == [
                (1, "serving"), (2, "canary")], local

            def canary_read():
                got = read()
                return got if got and got["server_generations"] == local["server_generations"] else None

            wait_until("the canary in Prometheus", canary_read, timeout=15, interval=0.2)
            assert "generation 2: canary" in rpctl.ok("status", "--prometheus", prom.url)
    finally:
        if exporter is not None:
            exporter.kill()
            exporter.communicate(timeout=10)
        for proc in procs:
            demo_worker.stop(proc, timeout=1)
