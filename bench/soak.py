"""The soak: hours of interleaved faults under one `rpctl serve`, and what they cost.

    ./scripts/bench.sh soak [--minutes N] [--seed S]      (default 30 minutes, seed 1)
    .venv/bin/python -m bench.run soak --minutes 2         (as root, from the repository root)

In a fresh network namespace, one `rpctl serve -c FILE` keeps four groups
(bench/_soak_world.py): nginx adopted (web, `adaptive = true`), demo workers
it launches (app, TCP), demo workers answering UDP with flow affinity (dns),
aioquic servers routed by QUIC-LB server id (quic); beside it a standalone
`rpctl run` and an `rpctl demo --keep`.  Steady clients (bench/_soak_load.py):
new TCP connections at RATES (every one's outcome counted), DNS_FLOWS UDP
flows that must stay on their member, QUIC_CONNECTIONS QUIC connections that
must not break and move to new source ports every 10 s.  A fault every 2 to
5 s from a seeded mix (bench/_soak_faults.py); `rpctl status`, `status
--json`, `dashboard --frames 1` and a scrape of `rpctl metrics` in turn,
every READ_EVERY seconds all along; serve's RSS, fds, threads and CPU every
SAMPLE_EVERY seconds (SIGKILLs of serve only in the first half, so that the
last serve shows whether they grow).  Every failure is given to the last
fault before it, and counted apart where a fault loses work by definition
(a SIGKILLed worker's own; a SIGKILLed serve loses none: its run groups'
workers outlive it, and each such fault notes which the next serve took
back with the same pid) (bench/_soak_tally.py).  At the end the groups are removed and what is left
in the kernel and bpffs is counted.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import shutil
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from bench import plots
from bench._soak_faults import Faults, rpctl
from bench._soak_load import Failure, QuicLoad, TcpLoad, UdpFlows, build
from bench._soak_tally import STEADY, attribute, goals, growth, minutes
from bench._soak_world import (APP, DNS, METRICS, QUIC, WEB, Logged, World, bpf_ids, program_maps, resources,
                               rpctl_argv, shared_holdings)
from bench.common import table, write_section
from rpctl.controller.store.state import Layout
from tests.support.netns import fresh_netns
from tests.support.quic import certificate

SECTION = "soak"
RATES = {WEB: ("web", 1600, 256), APP: ("app", 500, 128)}   # port: (group, connections/s, in flight at most)
TCP_RATE_GOAL = 3_000_000 / 1800     # the 3,000,000 connections in 30 minutes, a second
DNS_FLOWS, QUIC_CONNECTIONS = 200, 50
READ_EVERY, SAMPLE_EVERY = 2.0, 5.0
WARMUP = 300.0        # the last serve's RSS and fds are compared after this (a sixth of shorter runs)
FREED_WITHIN = 10.0   # seconds the kernel is given to free what the removed groups held
SETTLE = 10.0         # after the last fault: a stopped worker continued, broken QUIC connections seen
MARKED = ("SIGKILL serve", "SIGKILL worker", "nginx restart")   # the faults the figure marks (the others: every 2-5 s)
READS = (("status",), ("status", "--json"), ("dashboard", "--frames", "1"), "metrics")


@dataclass
class Result:
    minutes: float
    seed: int
    began: float = 0.0
    ended: float = 0.0
    rows: dict = field(default_factory=dict)
    goals: list = field(default_factory=list)
    tcp: dict = field(default_factory=dict)
    series: list = field(default_factory=list)
    failures: list = field(default_factory=list)
    faults: list = field(default_factory=list)
    samples: list = field(default_factory=list)
    reads: collections.Counter = field(default_factory=collections.Counter)
    udp: dict = field(default_factory=dict)
    quic: dict = field(default_factory=dict)
    inventory: dict = field(default_factory=dict)
    leftover_groups: list = field(default_factory=list)


class Watchers:
    """Threads that read all along: serve's resources, and rpctl's read commands in turn."""

    def __init__(self, world: World, result: Result):
        self.world, self.result = world, result
        self.stopping = threading.Event()
        self.programs: set[int] = set()
        self.failures: list = []
        self.threads = [threading.Thread(target=fn, daemon=True) for fn in (self._sample, self._read)]
        for t in self.threads:
            t.start()

    def _sample(self) -> None:
        while not self.stopping.wait(SAMPLE_EVERY):
            serve = self.world.serve
            r = resources(serve.pid)
            if r:
                self.result.samples.append({"t": time.monotonic(), "serve": len(self.world.serves), **r})

    def _read(self) -> None:
        i = 0
        while not self.stopping.wait(READ_EVERY):
            what = READS[i % len(READS)]
            i += 1
            name = what if isinstance(what, str) else " ".join(what)
            error = self._metrics() if what == "metrics" else self._command(what)
            self.result.reads[name] += 1
            if error:
                self.failures.append(Failure(time.monotonic(), "readers", name, error))

    def _command(self, args: tuple) -> str:
        out = rpctl(*args, env=self.world.env)
        if out.returncode != 0 or "Traceback" in out.stderr:
            return f"exit {out.returncode}: {out.stderr.strip()[-300:]}"
        if args == ("status", "--json"):
            self.programs |= {g["program_id"] for g in json.loads(out.stdout)["groups"] if g.get("program_id")}
        return ""

    @staticmethod
    def _metrics() -> str:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{METRICS}/metrics", timeout=10) as answer:
                body = answer.read().decode()
        except OSError as e:
            return f"scrape: {e}"
        return "" if "rpctl_up 1" in body else f"scrape without rpctl_up 1: {body[-300:]!r}"

    def stop(self) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join(60)


def quietly(step, log) -> None:
    """A step of the teardown: one that fails is said, and the others still run."""
    try:
        step()
    except Exception as e:  # noqa: BLE001 (the teardown goes on; the run's own error is the one raised)
        log(f"soak: teardown: {step}: {type(e).__name__}: {e}")


def inventory() -> dict:
    """Every program and map on the system, and what the shared programs hold."""
    root = Path(Layout().ns_dir).parent
    held_maps, slot_programs = shared_holdings(root)
    return {"programs": bpf_ids("prog"), "maps": bpf_ids("map"), "held maps": held_maps,
            "slot programs": slot_programs,
            "shared": sorted(p.name for p in root.glob("shared-*")) if root.exists() else []}


def soak(minutes: float, seed: int = 1, log=print, keep: Path | None = None) -> Result:
    """Run the soak; with `keep`, its processes' logs are copied there at the end."""
    result = Result(minutes, seed)
    with fresh_netns("rpctl-soak"), tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        cert, key = certificate(tmp)
        exe = build(tmp)
        result.inventory["start"] = inventory()
        world = World(tmp, cert, key)
        loads: list = []
        watchers = metrics = None
        try:
            world.start_solo()
            world.start_demo()
            metrics = Logged(rpctl_argv("metrics", "--listen", f"127.0.0.1:{METRICS}"), tmp / "metrics.log", world.env)
            tcp = TcpLoad(exe, RATES)
            udp = UdpFlows(DNS, DNS_FLOWS, seed)
            loads = [tcp, udp]
            quic = QuicLoad(QUIC, cert, QUIC_CONNECTIONS)
            loads.append(quic)
            watchers = Watchers(world, result)
            faults = Faults(world, seed)
            stopping = threading.Event()
            result.began = time.monotonic()
            log(f"soak: {minutes:g} minutes, seed {seed}; serve pid {world.serve.pid}")
            faults.run(result.began + minutes * 60, stopping, serve_kills_until=result.began + minutes * 30)
            faults.finish()
            time.sleep(SETTLE)
            result.ended = time.monotonic()
            result.quic = quic.stop()
            loads.remove(quic)
            udp.stop()
            tcp.stop()
            loads = []
            watchers.stop()
            result.faults = faults.done
            result.tcp = tcp.totals
            result.series = tcp.series
            result.udp = {"flows": DNS_FLOWS, "datagrams": udp.datagrams, "answers": udp.answers}
            result.failures = sorted(tcp.failures + udp.failures + quic.failures + watchers.failures,
                                     key=lambda f: f.t)
        finally:
            for stop in [load.stop for load in loads] + ([watchers.stop] if watchers else []):
                quietly(stop, log)
            programs = watchers.programs if watchers else set()
            maps = set().union(*(program_maps(p) for p in programs)) if programs else set()
            for p in [world.solo, world.demo, metrics, world.serve]:
                if p:
                    quietly(p.stop, log)
            quietly(world.nginx.stop, log)
            # What stays once every process stopped by SIGTERM: adopted groups by design
            # (steering goes on without serve); any other is left behind.
            result.leftover_groups = Layout().groups()
            for g in result.leftover_groups:
                rpctl("unload", "--group", g, "--force", env=world.env)
            ns_dir = Path(Layout().ns_dir)
            # The kernel frees a program and its maps a moment after the last reference goes.
            deadline = time.monotonic() + FREED_WITHIN
            while True:
                end = inventory()
                left = {
                    "programs": sorted(programs & (end["programs"] | end["slot programs"])),
                    "maps": sorted(maps & end["maps"] - end["held maps"]),
                    "state folders": sorted(p.name for p in ns_dir.iterdir()) if ns_dir.exists() else [],
                }
                if not any(left.values()) or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            result.inventory["end"], result.inventory["left"] = end, left
            result.inventory["ours"] = {"programs": len(programs), "maps": len(maps)}
            if keep:
                keep.mkdir(parents=True, exist_ok=True)
                for log_file in tmp.glob("*.log"):
                    shutil.copy(log_file, keep / log_file.name)
                (keep / "events.json").write_text(json.dumps({
                    "began": result.began,
                    "faults": [dataclasses.asdict(f) for f in result.faults],
                    "failures": [dataclasses.asdict(f) for f in result.failures]}, indent=1))
    return result


def judge(result: Result, rate_goal: float = TCP_RATE_GOAL) -> Result:
    """The goals of a run, with its failures given to its faults."""
    result.rows = attribute(result.faults, result.failures)
    seconds = result.minutes * 60
    warmup = min(WARMUP, seconds / 6)
    samples = result.samples
    window = min(60.0, seconds / 12)
    rss = growth(samples, warmup, "rss_kib", window) if samples else None
    fds = growth(samples, warmup, "fds", window) if samples else None
    tcp = sum(sum(c.values()) for c in result.tcp.values())
    left = {k: v for k, v in result.inventory["left"].items()}
    left["groups other than web (adopted: stays after serve by design)"] = [
        g for g in result.leftover_groups if g != "web"]
    result.goals = goals(result.rows, tcp, int(rate_goal * seconds), rss, fds, left)
    return result


# The published section ----------------------------------------------------------------------

def _cell(counter: collections.Counter) -> str:
    return ", ".join(f"{g} {what} {n}" for (g, what), n in sorted(counter.items())) or "0"


def _workers(kind: str, row) -> str:
    """The run groups' workers a SIGKILL of serve kept and lost ("" for the other faults)."""
    return f"{row.kept} / {len(row.lost)}" if kind == "SIGKILL serve" else ""


def fault_rows(result: Result) -> list[tuple]:
    order = sorted(result.rows, key=lambda k: (k == STEADY, -result.rows[k].count, k))
    return [(kind, r.count, _cell(r.failed), _cell(r.by_definition), _workers(kind, r), len(r.errors), r.refused)
            for kind, r in ((k, result.rows[k]) for k in order)]


def resource_rows(result: Result) -> list[tuple]:
    return [(s["minute"], s["serve"], f"{s['rss_kib'] / 1024:.1f}", s["fds"], s["threads"], f"{s['cpu_s']:.1f}")
            for s in minutes(result.samples, result.began)]


def picture(result: Result) -> str:
    """Connections per second and failures per second by group, serve's RSS and fds; faults as marks."""
    t0 = result.began
    per_group: dict[str, list] = collections.defaultdict(list)
    for t, group, counts in result.series:
        per_group[group].append((t, sum(counts.values())))
    rates = {}
    for group, points in per_group.items():
        xs = [(b[0] - t0) / 60 for a, b in zip(points, points[1:])]
        rates[f"{group} connections/s"] = (xs, [(b[1] - a[1]) / (b[0] - a[0]) for a, b in zip(points, points[1:])])
    failed: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for f in result.failures:
        failed[f"{f.where} {f.what}"][int(f.t - t0)] += 1
    seconds = range(int(result.ended - t0) + 1)
    failures = {k: ([s / 60 for s in seconds], [c[s] for s in seconds]) for k, c in sorted(failed.items())}
    samples = result.samples
    xs = [(s["t"] - t0) / 60 for s in samples]
    marks: dict[str, list] = collections.defaultdict(list)
    for f in result.faults:
        if f.kind in MARKED:
            marks[f.kind].append((f.t - t0) / 60)
    panels = [
        plots.Panel("new TCP connections/s", rates),
        plots.Panel("failures/s (all, by definition too)", failures or {"none": ([0], [0])}),
        plots.Panel("serve's RSS (MiB)", {"RSS": (xs, [s["rss_kib"] / 1024 for s in samples])},
                    "open fds", {"fds": (xs, [s["fds"] for s in samples])}),
    ]
    return plots.timeline("soak", f"{result.minutes:g}-minute soak, seed {result.seed}: a fault every 2 to 5 s "
                          f"({', '.join(MARKED)} marked)",
                          panels, dict(marks))


def errors_text(result: Result) -> str:
    lines = [f"- {kind}: {e}" for kind, r in sorted(result.rows.items()) for e in r.errors]
    lost = [f"- {w}" for r in result.rows.values() for w in r.lost]
    return (("\n\nFaults whose own steps did not work:\n\n" + "\n".join(lines)) if lines else "") + \
        (("\n\nRun groups' workers a SIGKILL of serve lost (pid before -> after the next serve was up):\n\n"
          + "\n".join(lost)) if lost else "")


def body(result: Result) -> str:
    g = [("met" if x.met else "NOT MET", x.what, x.figure) for x in result.goals]
    tcp_rows = [(group, *(f"{c[k]:,}" for k in ("ok", "refused", "reset", "timeout", "wrong", "other")))
                for group, c in sorted(result.tcp.items())]
    quic = result.quic
    serves = len({s["serve"] for s in result.samples})
    return f"""### The soak: interleaved faults under one serve (issue 26)

`./scripts/bench.sh soak --minutes {result.minutes:g} --seed {result.seed}` (default 30 minutes, seed 1).  In
a fresh network namespace one `rpctl serve -c FILE` keeps nginx 1.22 adopted (web, 2 to 4 workers,
`adaptive = true`), a `run` group of 2 demo workers (app, TCP), a `run` group of 2 UDP demo workers with flow
affinity (dns) and a `run` group of 2 aioquic servers routed by QUIC-LB server id (quic); beside it a
standalone `rpctl run` and an `rpctl demo --keep`.  Steady clients: new TCP connections with
`Connection: close` (C, bench/soaktcp.c) at {' + '.join(f'{r}/s to {g}' for g, r, _ in RATES.values())},
{DNS_FLOWS} UDP flows each checking that every answer comes from the member (name and pid) that answered
first, {QUIC_CONNECTIONS} QUIC connections moved to new source ports every 10 s.  A fault every 2 to 5 s
from a seeded mix ({len(result.faults)} in all); `rpctl status`, `status --json`, `dashboard --frames 1` and a
scrape of `rpctl metrics` in turn every {READ_EVERY:g} s ({sum(result.reads.values())} reads).

A failure counts against the last fault injected before it (a timed-out connection from when it started).
"By definition" are failures a fault causes by what it is: a SIGKILLed worker's accepted connections (UDP:
its flows, QUIC: its connections).  A SIGKILLed serve loses nothing by definition: its `run` groups'
workers outlive it and the next serve takes them back, so every failure after it counts against the goals;
"workers kept / lost" are the run groups' workers whose pid was the same before each SIGKILL of serve and
once the next serve was up, and those whose pid was not.

{table(("goal", "what", "figure"), [(a, b, c) for a, b, c in g])}

Faults, and what each caused:

{table(("fault", "times", "failed", "by definition", "workers kept / lost", "own steps that did not work",
        "refused as unsafe"), fault_rows(result))}

"Refused as unsafe": `rpctl restart` or `drain` of app's one member the file had not drained (exit 4,
"no other live member would serve meanwhile"), as it should.{errors_text(result)}

TCP connections by outcome:

{table(("group", "ok", "refused", "reset", "timed out", "wrong answer", "other"), tcp_rows)}

UDP: {result.udp.get('datagrams', 0):,} datagrams sent, {result.udp.get('answers', 0):,} answered.  QUIC:
{quic.get('established', 0)} connections established, {quic.get('broken', 0)} broken (all causes),
{quic.get('migrated', 0):,} migrations, {quic.get('exchanges', 0):,} echoes.

serve's resources at the end of each minute ({serves} serve processes, one after each SIGKILL).  serve is
SIGKILLed only in the first half of the run, so that the last one lives through the second half: its
growth is the mean of its last minute against the mean of the minute after its warm-up
({min(WARMUP, result.minutes * 10):g} s; shorter runs: a twelfth of the run instead of a minute).  A serve
that had to compile the program (the first, and one after the kept-program cache was removed) holds
bcc and LLVM: about 120 MiB more RSS than one that found it kept.

{table(("minute", "serve", "RSS MiB", "open fds", "threads", "CPU s (that serve's)"), resource_rows(result))}

Left behind after the groups were removed: {result.inventory['left']}; groups still there once every
process had stopped (adopted groups stay by design: steering goes on without serve):
{result.leftover_groups}.  Programs and maps on the whole system (other work included) at the start:
{len(result.inventory['start']['programs'])} and {len(result.inventory['start']['maps'])}, at the end:
{len(result.inventory['end']['programs'])} and {len(result.inventory['end']['maps'])}.

{picture(result)}
"""


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="soak", description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=30.0, help="how long faults are injected (default 30)")
    p.add_argument("--seed", type=int, default=1, help="the fault mix's seed (default 1)")
    p.add_argument("--keep-logs", type=Path, help="copy serve's (and the others') logs here at the end")
    return p.parse_args(argv or [])


def run(quick: bool, argv: list[str] | None = None) -> None:
    args = parse(argv)
    minutes_ = 0.5 if quick else args.minutes
    result = judge(soak(minutes_, args.seed, keep=args.keep_logs))
    text = body(result)
    print(text)
    write_section(SECTION, text)
