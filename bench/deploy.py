"""Blue/green under rpctl serve: how fast new work moves to a new server started beside the old.

In a fresh network namespace per round: nginx v1 (2 workers) adopted through
a file that says `generations = "newest"`, `rpctl serve -c FILE` running as
its own process, 4 client threads sending one HTTP request per connection
(each noted with when it started and which worker answered).  Then nginx v2
(2 workers) is started beside v1 on the same port; this process polls
sock_diag every 2 ms for v2's first listener.  Figures, per round:

- from v2's first listener to the start of the first request v2 answered;
- from v2's first listener to the start of the last request v1 answered
  (after it, every new connection reached v2);
- from v2 ready (a worker of it polls each of its listeners: from then on
  it can serve) to the start of the first request v2 answered;
- v2's share of the requests started in each 100 ms window, from 0.5 s
  before its first listener to 1.5 s after (plotted, one line a round).
v1 is stopped once serve says generation 1 is drained; failed requests over
the whole round are counted.  The machine is shared: timings are noisy.

    .venv/bin/python -m bench.run deploy      (as root, from the repository root)
    ./scripts/bench.sh deploy                 (the same, after setting up)
    ./scripts/bench.sh --quick deploy         (smoke check; figures not kept)
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import plots
from bench.common import median, table, write_section
from tests.support.launched import wait_until
from tests.support.netns import fresh_netns
from tests.support.nginx import Nginx, group_config
from tests.support.timed_requests import FAILED, NewListener, TimedRequests

SECTION = "deploy"
PORT = 7332
ROUNDS, QUICK_ROUNDS = 8, 1
WINDOW_MS = 100
FROM_MS, TO_MS = -500, 1500  # the windows plotted, around v2's first listener
DRAINED = "generation 1 of web drained: safe to stop"


def _start(folder: Path) -> Nginx:
    folder.mkdir()
    n = Nginx(folder, port=PORT, workers=2)
    n.wait_ready()
    return n


def one_round() -> dict:
    """One blue/green switch; its figures (ms) and v2's share per window."""
    with fresh_netns("rpctl-b"), tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        conf = tmp / "rpctl.toml"
        conf.write_text(group_config(PORT) + 'generations = "newest"\n')
        err = tmp / "serve.err"
        servers = [_start(tmp / "v1")]
        with open(err, "wb") as e:
            serve = subprocess.Popen([sys.executable, "-m", "rpctl.cli", "serve", "-c", str(conf)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=e)
        try:
            wait_until("v1 adopted", lambda: "group web: generation 1: takes new work" in err.read_text(), 20)
            with TimedRequests(PORT, concurrency=4) as load:
                time.sleep(0.6)
                with NewListener(PORT) as watch:
                    servers.append(_start(tmp / "v2"))
                ready = time.monotonic()
                wait_until("generation 1 drained", lambda: DRAINED in err.read_text(), 20)
                time.sleep(max(0.0, watch.appeared + TO_MS / 1000 - time.monotonic()))
                servers[0].stop()
                time.sleep(0.3)
        finally:
            serve.terminate()
            serve.wait(15)
            for n in servers:
                n.stop()
    v1, v2 = servers[0].worker_pids, servers[1].worker_pids
    t0 = watch.appeared
    first_v2 = min(start for start, pid in load.done if pid in v2)
    last_v1 = max(start for start, pid in load.done if pid in v1)
    shares = []
    for lo in range(FROM_MS, TO_MS, WINDOW_MS):
        window = [pid for start, pid in load.done
                  if t0 + lo / 1000 <= start < t0 + (lo + WINDOW_MS) / 1000 and pid != FAILED]
        shares.append(100 * sum(p in v2 for p in window) / len(window) if window else 0.0)
    return {"first_v2": 1000 * (first_v2 - t0), "last_v1": 1000 * (last_v1 - t0),
            "from_ready": 1000 * (first_v2 - ready), "shares": shares,
            "requests": len(load.done), "failed": load.failed}


def run(quick: bool) -> None:
    rounds = [one_round() for _ in range(QUICK_ROUNDS if quick else ROUNDS)]
    first = [r["first_v2"] for r in rounds]
    last = [r["last_v1"] for r in rounds]
    from_ready = [r["from_ready"] for r in rounds]
    rows = [
        ("v2's first listener -> the first request v2 answered", f"{median(first):.0f} ms", f"{max(first):.0f} ms"),
        ("v2's first listener -> the last request v1 answered", f"{median(last):.0f} ms", f"{max(last):.0f} ms"),
        ("v2 ready (a worker polls each of its listeners) -> the first request v2 answered",
         f"{median(from_ready):.0f} ms", f"{max(from_ready):.0f} ms"),
    ]
    header = ("switch", f"median of {len(rounds)} rounds", "max")
    print(table(header, rows))
    failed = sum(r["failed"] for r in rounds)
    requests = sum(r["requests"] for r in rounds)
    xs = list(range(FROM_MS, TO_MS, WINDOW_MS))
    picture = plots.lines(
        "deploy", "v2's share of the requests started in each 100 ms window (one line a round)", "% on v2", xs,
        {f"round {i + 1}": r["shares"] for i, r in enumerate(rounds)},
        xlabel="ms after v2's first listener (window start)", log2_x=False,
    )
    body = f"""### Blue/green: new work moves to the new server (issue 24)

`./scripts/bench.sh deploy` (`python -m bench.run deploy`).  nginx 1.22 v1
(2 workers) adopted through a file with `generations = "newest"` and `rpctl
serve` running, 4 client threads (one HTTP request per connection); nginx
v2 (2 workers) started beside it on the same port; v1 stopped once serve
said generation 1 was drained.  Times are from the moment sock_diag (polled
every 2 ms) first shows v2's first listener to the start of a request
(that includes nginx starting its workers: serve adopts a listener once a
process serves it), and from v2 ready (polled every 50 ms, so within
50 ms; negative: a request answered before the poll saw it ready); serve
looks every 200 ms, then reconciles and publishes once.

{table(header, rows)}

Failed requests over the {len(rounds)} rounds, stop of v1 included: {failed} of {requests}.

{picture}
"""
    write_section(SECTION, body)
