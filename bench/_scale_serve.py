"""rpctl serve against the number of groups: its idle CPU, a new listener's admission, adaptive sampling.

Three figures, each in a fresh network namespace, with groups made the way
an operator makes them: one process (the holder, its comm HOLDER_COMM)
holds every listener, a groups' file adopts them by that comm, `rpctl
apply -c FILE` creates the groups, then `rpctl serve -c FILE` runs as its
own process until the figure is taken.

- serve_idle(groups, members_per_group, seconds): serve's CPU (utime +
  stime from /proc/PID/stat over the window, % of one core) and RSS while
  nothing changes; and from it the CPU serve spends per interval (it looks
  at every group each serve.INTERVAL).
- admission_latency(groups, trials): the holder opens a new listener on
  the port of one group after another (a random pause first, so that the
  listen() falls anywhere in serve's interval) and this process polls the
  group's members until that socket is a live member: ms from listen()
  returning to membership, median and p90.  The listener is closed again
  and its removal waited for before the next trial.
- adaptive_cpu(groups, plain_groups=0): serve's CPU with `adaptive = true`
  on `groups` groups (each sampled every adaptive_interval_ms, 25 ms by
  default), idle, alone or beside `plain_groups` groups that are not
  adaptive.
- idle_and_admission(groups, ...): the first two from one set-up.

Run alone (as root, from the repository root):

    .venv/bin/python -m bench._scale_serve [--groups 1,16,64,256] [--seconds 60] [--trials 20]
        [--adaptive-groups 16] [--plain-groups 240] [--json]

The CPU window is 60 s by default: it holds two of serve's periodic
checks (every 30 s), which a shorter one may miss.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import median, table
from bench.dashboard_cpu import cpu_seconds
from tests.support.launched import wait_until
from tests.support.netns import fresh_netns

BASE_PORT = 20000
HOLDER_COMM = "rpctl-holder"
WARMUP_S = 3.0
SETUP_S_PER_GROUP = 2.0  # what `rpctl apply` may take per group before the set-up is given up
POLL_S = 0.002           # how often the admission is polled
SERVE_INTERVAL_S = 0.2   # serve.INTERVAL: a look at every group this often
SAMPLE_INTERVAL_S = 0.025  # adaptive_interval_ms's default: an adaptive group sampled this often

__all__ = ["admission_latency", "adaptive_cpu", "hold", "idle_and_admission", "serve_idle"]


# The holder: one process that holds every listener ---------------------------------------


def hold(groups: int, members: int, base_port: int) -> None:
    """The holder's main: `members` SO_REUSEPORT listeners on each of `groups`
    ports from base_port; then commands on stdin, one answer line each:
    `open PORT` -> "COOKIE MONOTONIC" (a new listener, and when its listen()
    returned), `close COOKIE` -> "closed".  Exits at end of input.  Every
    listener is in an epoll, as an event loop's are: discover tells by it
    that this process serves the socket, not only holds it."""
    import selectors
    import socket

    from rpctl.controller.kernel.sockets import cookie_of

    with open("/proc/self/comm", "w") as f:
        f.write(HOLDER_COMM)
    polled = selectors.EpollSelector()

    def listener(port: int) -> socket.socket:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind(("127.0.0.1", port))
        s.listen(128)
        polled.register(s, selectors.EVENT_READ)
        return s

    held = [listener(base_port + g) for g in range(groups) for _ in range(members)]
    extra: dict[int, socket.socket] = {}
    print("ready", len(held), flush=True)
    for line in sys.stdin:
        verb, arg = line.split()
        if verb == "open":
            s = listener(int(arg))
            opened = time.monotonic()
            extra[cookie_of(s)] = s
            print(cookie_of(s), repr(opened), flush=True)
        elif verb == "close":
            s = extra.pop(int(arg))
            polled.unregister(s)
            s.close()
            print("closed", flush=True)


class Holder:
    """The holder process, driven through its stdin and stdout."""

    def __init__(self, groups: int, members: int):
        code = f"from bench._scale_serve import hold; hold({groups}, {members}, {BASE_PORT})"
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, cwd=Path(__file__).resolve().parent.parent)
        ready = self.proc.stdout.readline()
        if not ready.startswith("ready"):
            raise RuntimeError(f"the holder did not start: {ready!r}")

    def ask(self, line: str) -> str:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def open(self, port: int) -> tuple[int, float]:
        cookie, opened = self.ask(f"open {port}").split()
        return int(cookie), float(opened)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(10)


# The groups' file, apply, serve ---------------------------------------------------------------


def group_name(g: int) -> str:
    return f"g{g}"


def groups_file(path: Path, groups: int, adaptive: int = 0) -> str:
    """A file of `groups` groups g0.. on 127.0.0.1:BASE_PORT+g, each adopting the holder's
    listeners; the first `adaptive` of them with adaptive steering."""
    path.write_text("".join(
        f'[[group]]\nname = "{group_name(g)}"\nlisten = "tcp:127.0.0.1:{BASE_PORT + g}"\n'
        f'adopt = {{ comm = "{HOLDER_COMM}" }}\n{"adaptive = true" if g < adaptive else ""}\n\n'
        for g in range(groups)))
    return str(path)


def rpctl(*args: str, timeout: float) -> None:
    done = subprocess.run([sys.executable, "-m", "rpctl.cli", *args], capture_output=True, text=True, timeout=timeout)
    if done.returncode:
        raise RuntimeError(f"rpctl {' '.join(args)}: exit {done.returncode}: {done.stderr.strip()}")


class ServeProcess:
    """`rpctl serve -c FILE` as its own process, its stderr in a file; ready once it logged
    that it serves the file's groups (every group reconciled once)."""

    def __init__(self, config: str, err: Path, ready_within: float):
        self.err = err
        with open(err, "wb") as f:
            self.proc = subprocess.Popen([sys.executable, "-m", "rpctl.cli", "serve", "-c", config],
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=f)
        wait_until("serve ready", self.ready, ready_within, 0.05)

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"serve exited: {self.err.read_text()}")
        return "serving " in self.err.read_text()

    def log(self) -> str:
        return self.err.read_text()

    def rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            kib = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        return kib / 1024

    def cpu_percent(self, seconds: float) -> float:
        """serve's CPU over `seconds` from now, % of one core."""
        t0, c0 = time.monotonic(), cpu_seconds(self.proc.pid)
        time.sleep(seconds)
        t1, c1 = time.monotonic(), cpu_seconds(self.proc.pid)
        if self.proc.poll() is not None:
            raise RuntimeError(f"serve exited: {self.log()}")
        return 100 * (c1 - c0) / (t1 - t0)

    def stop(self) -> None:
        from rpctl.cli.demo.worker import stop

        stop(self.proc, timeout=30)


class Served:
    """A fresh namespace, the holder with its listeners, the groups applied, and serve running."""

    def __init__(self, groups: int, members: int, adaptive: int = 0):
        self.groups, self.members, self.adaptive = groups, members, adaptive

    def __enter__(self) -> "Served":
        self._ns = fresh_netns("rpctl-s")
        self._ns.__enter__()
        self._tmp = tempfile.TemporaryDirectory()
        self.holder = self.serve = None
        try:
            tmp = Path(self._tmp.name)
            self.holder = Holder(self.groups, self.members)
            config = groups_file(tmp / "rpctl.toml", self.groups, self.adaptive)
            t0 = time.monotonic()
            rpctl("apply", "-c", config, timeout=60 + SETUP_S_PER_GROUP * self.groups)
            self.apply_s = time.monotonic() - t0
            self.serve = ServeProcess(config, tmp / "serve.err", 60 + self.groups)
        except BaseException:
            self.__exit__(*sys.exc_info())
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self.serve is not None:
                self.serve.stop()
            if self.holder is not None:
                self.holder.close()
        finally:
            self._tmp.cleanup()
            self._ns.__exit__(*exc)


# The figures ---------------------------------------------------------------------------------------


def _cpu_figures(s: Served, seconds: float, interval: float) -> dict:
    """serve's CPU over `seconds` after a warm-up, also as ms per `interval` (a look, or a sample)."""
    time.sleep(WARMUP_S)
    cpu = s.serve.cpu_percent(seconds)
    return {
        "groups": s.groups, "members": s.groups * s.members, "seconds": seconds,
        "cpu_percent": cpu, "ms_per_interval": cpu / 100 * interval * 1e3, "interval_ms": interval * 1e3,
        "rss_mb": s.serve.rss_mb(), "apply_s": s.apply_s,
    }


def serve_idle(groups: int, members_per_group: int = 2, seconds: float = 60.0) -> dict:
    """serve's CPU (% of one core) and RSS at idle with `groups` groups of `members_per_group` members."""
    with Served(groups, members_per_group) as s:
        return _cpu_figures(s, seconds, SERVE_INTERVAL_S)


def adaptive_cpu(groups: int = 16, members_per_group: int = 2, seconds: float = 60.0, plain_groups: int = 0) -> dict:
    """serve's CPU with `groups` adaptive groups (each sampled every 25 ms), idle; beside them
    `plain_groups` groups that are not adaptive (their listeners in the same namespace)."""
    with Served(groups + plain_groups, members_per_group, adaptive=groups) as s:
        return {**_cpu_figures(s, seconds, SAMPLE_INTERVAL_S), "adaptive_groups": groups}


def _member_cookies(g) -> set[int]:
    """The cookies of the live generation's members of open group `g`."""
    members = g.members()
    return {members[i].cookie for i in g.live_policies(members)}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _admissions(s: Served, trials: int, seed: int) -> dict:
    from rpctl.controller.store.generation import Group

    rng = random.Random(seed)
    waits = []
    for trial in range(trials):
        g = trial * 7919 % s.groups  # every group in turn, far apart when there are many
        with Group.open(group_name(g)) as group:
            time.sleep(rng.uniform(0.3, 0.3 + SERVE_INTERVAL_S))
            cookie, opened = s.holder.open(BASE_PORT + g)
            wait_until("the new listener a member", lambda: cookie in _member_cookies(group), 10, POLL_S)
            waits.append((time.monotonic() - opened) * 1e3)
            s.holder.ask(f"close {cookie}")
            wait_until("the closed listener removed", lambda: cookie not in _member_cookies(group), 10, 0.02)
    return {"groups": s.groups, "trials": trials, "median_ms": median(waits),
            "p90_ms": percentile(waits, 0.9), "max_ms": max(waits)}


def admission_latency(groups: int, trials: int = 20, members_per_group: int = 2, seed: int = 1) -> dict:
    """ms from a new listener's listen() to its being a live member of its group, over `trials`
    listeners opened on the groups in turn; median, p90 and max."""
    with Served(groups, members_per_group) as s:
        return _admissions(s, trials, seed)


def idle_and_admission(groups: int, members_per_group: int = 2, seconds: float = 60.0, trials: int = 20,
                       seed: int = 1) -> tuple[dict, dict]:
    """serve_idle's figures, then admission_latency's, from one set-up (making groups takes long)."""
    with Served(groups, members_per_group) as s:
        return _cpu_figures(s, seconds, SERVE_INTERVAL_S), _admissions(s, trials, seed)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench._scale_serve", description=__doc__.split("\n")[0])
    p.add_argument("--groups", default="1,16,64", help="group counts, comma-separated (default 1,16,64)")
    p.add_argument("--members", type=int, default=2, help="members per group (default 2)")
    p.add_argument("--seconds", type=float, default=60.0,
                   help="CPU window (default 60: it holds two of serve's periodic checks)")
    p.add_argument("--trials", type=int, default=20, help="new listeners per group count (default 20)")
    p.add_argument("--adaptive-groups", type=int, default=16, help="adaptive groups (default 16; 0: skip)")
    p.add_argument("--plain-groups", type=int, default=240,
                   help="adaptive groups are also measured beside this many others (default 240; 0: skip)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = p.parse_args(argv)
    counts = [int(c) for c in args.groups.split(",")]
    figures = [idle_and_admission(n, args.members, args.seconds, args.trials) for n in counts]
    idle, admitted = [f[0] for f in figures], [f[1] for f in figures]
    adaptive = [adaptive_cpu(args.adaptive_groups, args.members, args.seconds, plain)
                for plain in ([0] + ([args.plain_groups] if args.plain_groups else []))] if args.adaptive_groups else []
    if args.json:
        print(json.dumps({"idle": idle, "admission": admitted, "adaptive": adaptive}, indent=2))
        return
    print(table(("groups", "members", "serve CPU", "per interval", "RSS", "apply"),
                [(f["groups"], f["members"], f"{f['cpu_percent']:.2f} %", f"{f['ms_per_interval']:.3f} ms",
                  f"{f['rss_mb']:.0f} MB", f"{f['apply_s']:.1f} s") for f in idle]))
    print(table(("groups", "admission median", "p90", "max", "trials"),
                [(f["groups"], f"{f['median_ms']:.0f} ms", f"{f['p90_ms']:.0f} ms", f"{f['max_ms']:.0f} ms",
                  f["trials"]) for f in admitted]))
    if adaptive:
        print(table(("adaptive groups", "groups", "serve CPU", "per sample (25 ms)", "RSS"),
                    [(f["adaptive_groups"], f["groups"], f"{f['cpu_percent']:.2f} %", f"{f['ms_per_interval']:.3f} ms",
                      f"{f['rss_mb']:.0f} MB") for f in adaptive]))


if __name__ == "__main__":
    main()
