"""rpctl serve: how long a reload's new listener waits for traffic, and what serve costs.

Three figures, each in a fresh network namespace with `rpctl serve -c FILE`
running as its own process, exactly as an operator starts it:

- the wait of a new listener: nginx (Debian's, `listen ... reuseport`)
  adopted through the file, under continuous load (4 client threads), is
  reloaded from 3 to 4 workers and back, RELOADS times.  For each reload to
  4 this process polls sock_diag every POLL_S for the new listener's
  cookie (the moment nginx opened it) and then the group's counters for
  the first connection steered to it;
- serve's CPU at idle: the same nginx group, no load, nothing changing;
- serve's CPU with 64 members: 64 SO_REUSEPORT listeners held by this
  process (adopted by its comm), under light load (40 connections every
  0.25 s), nothing changing.
CPU is utime + stime from /proc/PID/stat over WINDOW_S after a warm-up, as
% of one core.  The machine is shared with other busy work: CPU figures
are noisy.

    .venv/bin/python -m bench.run serve       (as root, from the repository root)
    ./scripts/bench.sh serve                  (the same, after setting up)
    ./scripts/bench.sh --quick serve          (smoke check; figures not kept)
"""

from __future__ import annotations

import socket
import tempfile
import time
from pathlib import Path

from bench._scale_serve import ServeProcess
from bench.common import median, table, write_section
from bench.dashboard_cpu import ms_per_call
from tests.support.launched import wait_until
from tests.support.netns import fresh_netns
from tests.support.nginx import Nginx, group_config
from tests.support.traffic import ClientLoad, LightLoad, Members

SECTION = "serve"
PORT = 7330
RELOADS, QUICK_RELOADS = 12, 2
WARMUP_S, QUICK_WARMUP_S = 3.0, 0.5
WINDOW_S, QUICK_WINDOW_S = 20.0, 2.0
MEMBERS = 64
POLL_S = 0.005


def _config(path: Path, comm: str) -> str:
    path.write_text(group_config(PORT, comm))
    return str(path)


def _member_count() -> int:
    from rpctl.controller.contract.errors import RpctlError
    from rpctl.controller.read import views

    try:
        return sum(not m.gone for m in views.read_view("web", with_queues=False).members)
    except RpctlError:
        return 0


def _listeners() -> set[int]:
    from rpctl.controller.kernel import diag

    return set(diag.listeners(socket.IPPROTO_TCP, PORT, socket.AF_INET))


def _steered_to(cookie: int) -> int:
    from rpctl.controller.read import views

    for m in views.read_view("web", with_queues=False).members:
        if m.cookie == cookie and not m.gone:
            return sum(m.counters.values())
    return 0


def nginx_figures(reloads: int, warmup: float, window: float) -> tuple[list[float], list[float], float]:
    """(waits from the new listener's appearance to its first connection, in ms; the same
    from the reload's SIGHUP; serve's idle CPU %)."""
    with fresh_netns("rpctl-b"), tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "nginx").mkdir()
        ngx = Nginx(tmp / "nginx", PORT, 3)
        serve = None
        try:
            ngx.wait_ready()
            serve = ServeProcess(_config(tmp / "rpctl.toml", "nginx"), tmp / "serve.err", 15)
            wait_until("3 members", lambda: _member_count() == 3, 15)
            time.sleep(warmup)
            idle = serve.cpu_percent(window)
            waits, from_hup = [], []
            with ClientLoad(PORT, concurrency=4):
                for _ in range(reloads):
                    before = _listeners()
                    hup = time.monotonic()
                    old = ngx.start_reload(4)
                    new = wait_until("the new listener", lambda before=before: _listeners() - before, 15, POLL_S)
                    opened = time.monotonic()
                    (cookie,) = new
                    wait_until("its first connection", lambda cookie=cookie: _steered_to(cookie), 10, POLL_S)
                    first = time.monotonic()
                    waits.append((first - opened) * 1e3)
                    from_hup.append((first - hup) * 1e3)
                    ngx.wait_reloaded(old)
                    ngx.reload(3)
                    wait_until("3 members again", lambda: _member_count() == 3, 15)
            if serve.proc.poll() is not None:
                raise RuntimeError(f"serve exited: {serve.log()}")
            return waits, from_hup, idle
        finally:
            if serve is not None:
                serve.stop()
            ngx.stop()


def look_and_reconcile_ms(config: str, calls: int) -> tuple[float, float]:
    """Median ms of serve's cheap look at the group (watch.signs) and of a full
    reconcile that finds nothing to do, timed in this process."""
    from rpctl.controller.ops import config as configs
    from rpctl.controller.ops import reconcile, watch
    from rpctl.controller.read import views

    spec = configs.load(config).group("web")
    pids = [m.pid for m in views.read_view("web", with_queues=False).members]
    return ms_per_call(lambda: watch.signs(spec.listen, pids), calls), ms_per_call(lambda: reconcile.reconcile(spec), calls)


def members_cpu(warmup: float, window: float, calls: int) -> tuple[float, float, float]:
    """serve's CPU % with MEMBERS members under light load; then the ms of a look and of a reconcile."""
    with open("/proc/self/comm") as f:
        comm = f.read().strip()
    with fresh_netns("rpctl-b"), tempfile.TemporaryDirectory() as d:
        members = Members(port=PORT)
        serve = None
        try:
            for _ in range(MEMBERS):
                members.add()
            serve = ServeProcess(_config(Path(d) / "rpctl.toml", comm), Path(d) / "serve.err", 60)
            wait_until(f"{MEMBERS} members", lambda: _member_count() == MEMBERS, 60)
            with LightLoad(members):
                time.sleep(warmup)
                cpu = serve.cpu_percent(window)
            serve.stop()
            return (cpu, *look_and_reconcile_ms(str(Path(d) / "rpctl.toml"), calls))
        finally:
            if serve is not None:
                serve.stop()
            members.close()


def run(quick: bool) -> None:
    reloads = QUICK_RELOADS if quick else RELOADS
    warmup = QUICK_WARMUP_S if quick else WARMUP_S
    window = QUICK_WINDOW_S if quick else WINDOW_S
    waits, from_hup, idle = nginx_figures(reloads, warmup, window)
    busy, look_ms, reconcile_ms = members_cpu(warmup, window, 5 if quick else 50)
    rows = [
        ("new listener: opened -> its first connection", f"{median(waits):.0f} ms", f"{max(waits):.0f} ms"),
        ("new listener: nginx -s reload -> its first connection", f"{median(from_hup):.0f} ms",
         f"{max(from_hup):.0f} ms"),
    ]
    print(table(("wait", f"median of {len(waits)} reloads", "max"), rows))
    cpu_rows = [
        ("idle (nginx, 3 members, no load)", f"{idle:.2f} %"),
        (f"{MEMBERS} members, light load (40 connections / 0.25 s)", f"{busy:.2f} %"),
    ]
    print(table(("serve's CPU", "% of one core"), cpu_rows))
    cost_rows = [
        ("the look serve takes 5 times a second (sock_diag dump + pid check)", f"{look_ms:.2f} ms"),
        ("a full reconcile that finds nothing to do (/proc scan + plan)", f"{reconcile_ms:.2f} ms"),
    ]
    print(table((f"{MEMBERS} members, timed in-process", "median"), cost_rows))
    body = f"""### rpctl serve: a reload's new listener, and serve's CPU (issue 14)

`./scripts/bench.sh serve` (`python -m bench.run serve`).  nginx 1.22 adopted
through a config file (`adopt = {{ comm = "nginx" }}`) with `rpctl serve`
running, under continuous load (4 client threads); {len(waits)} reloads from 3
to 4 workers (and back).  The wait is from the moment sock_diag first shows
the new listener (polled every {POLL_S * 1e3:.0f} ms) to the first connection
the program steers to it; serve looks every 200 ms.

{table(("wait", f"median of {len(waits)} reloads", "max"), rows)}

serve's CPU (utime + stime from /proc/PID/stat over {window:g} s after
{warmup:g} s of warm-up, % of one core).  This machine is shared with other
busy work: these figures are noisy.

{table(("serve's CPU", "% of one core"), cpu_rows)}

Why serve looks instead of reconciling every time (docs/decisions/0012),
timed in the benchmark's process on the {MEMBERS}-member group:

{table((f"{MEMBERS} members, timed in-process", "median"), cost_rows)}
"""
    write_section(SECTION, body)
