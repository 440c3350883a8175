"""End to end: new TCP connections per second through a 4-worker group.

A fast server (nginx, 4 workers, `listen ... reuseport`, a 200 reply of a few
bytes) in a fresh network namespace, adopted by rpctl once; wrk
(`Connection: close`, so every request is a new connection) against it.
The same nginx, the same listeners, three selections, rounds alternating:

  kernel default   no program attached: the kernel's reuseport hash
  select only      the data-path benchmark's floor program (one
                   bpf_sk_select_reuseport at hash & 3) attached
  rpctl weighted   rpctl's group program attached (equal weights)

Switching is one setsockopt on one of the listeners (SO_ATTACH_REUSEPORT_EBPF
or SO_DETACH_REUSEPORT_BPF), so nothing else changes between rounds.  The
group's own counters check that rpctl's program placed every connection of
its rounds, and none of the others.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from pathlib import Path

from bench import plots
from bench.common import alternate, median, parse_wrk, span, table, write_section, wrk_command

SECTION = "end-to-end"
PORT = 7700
WORKERS = 4
# Many short rounds rather than a few long ones: the rate jumps between two
# levels about 10 % apart whatever the selection (with no program attached
# too); over 15 rounds the medians shrug that off, over 7 they did not always
# (0.944 once, from four slow rpctl rounds).
ROUNDS, QUICK_ROUNDS = 15, 1
DURATION, QUICK_DURATION = 2, 1          # seconds of wrk per round
WRK_THREADS, WRK_CONNECTIONS = 2, 64
URL = f"http://127.0.0.1:{PORT}/"
REFERENCE = Path(__file__).resolve().parent / "datapath.bpf.c"
GOAL = 0.98


def _wrk(seconds: float) -> dict:
    out = subprocess.run(wrk_command(URL, WRK_THREADS, WRK_CONNECTIONS, seconds), capture_output=True, text=True,
                         timeout=seconds + 60)
    if out.returncode != 0:
        raise RuntimeError(f"wrk exited {out.returncode}: {out.stdout}{out.stderr}")
    return parse_wrk(out.stdout)


class Selections:
    """The three ways of selecting, switched on the adopted nginx listeners."""

    def __init__(self, group_name: str, stack: contextlib.ExitStack):
        from rpctl.controller.contract import abi
        from rpctl.controller.kernel import loader, sockets
        from rpctl.controller.store import group as groups

        g = groups.Group.open(group_name)
        stack.callback(g.close)
        self.group = g
        used = [(i, m) for i, m in enumerate(g.members()) if m.flags & abi.RP_MEMBER_USED]
        # A socket belongs to one socket array at most: the floor program
        # selects from the group's own, where the members sit at 0..3.
        if [i for i, _ in used] != list(range(WORKERS)):
            raise RuntimeError(f"members at indexes {[i for i, _ in used]}, the floor program selects "
                               f"0..{WORKERS - 1}")
        # One listener is enough to switch the whole reuseport group's program.
        _, first = used[0]
        self.sock = sockets.take_socket(first.pid, first.fd)
        stack.callback(self.sock.close)
        if sockets.cookie_of(self.sock) != first.cookie:
            raise RuntimeError(f"member 0: pid {first.pid} fd {first.fd} is another socket now")
        self.floor_fd = loader.compile_and_load(str(REFERENCE), "rp_select_only", {"socks": g.maps["socks"]},
                                                migrate=False)
        stack.callback(os.close, self.floor_fd)

    def use(self, name: str) -> None:
        from rpctl.controller.kernel import sockets

        if name == "kernel default":
            sockets.detach_program(self.sock)
        elif name == "select only":
            sockets.attach_program(self.sock, self.floor_fd)
        else:
            self.group.attach(self.sock)

    def placed(self) -> int:
        """Connections rpctl's program has placed so far."""
        from rpctl.controller.contract import abi

        return sum(abi.selections(t) for t in self.group.member_totals())


def one_round(sel: Selections, name: str, seconds: float) -> dict:
    sel.use(name)
    before = sel.placed()
    result = _wrk(seconds)
    result["placed"] = sel.placed() - before
    return result


def run(quick: bool) -> None:
    from rpctl.controller.ops import adopt

    from tests.support.netns import fresh_netns
    from tests.support.nginx import NGINX, Nginx

    if not os.access(NGINX, os.X_OK):
        raise RuntimeError(f"{NGINX} is missing: apt-get install nginx-light (scripts/provision.sh --with-tests)")
    rounds = QUICK_ROUNDS if quick else ROUNDS
    seconds = QUICK_DURATION if quick else DURATION
    names = ("kernel default", "select only", "rpctl weighted")
    with fresh_netns("rpctl-bench-e2e-"), tempfile.TemporaryDirectory(prefix="rpctl-nginx-") as tmp, \
            contextlib.ExitStack() as stack:
        ngx = Nginx(Path(tmp), port=PORT, workers=WORKERS)
        stack.callback(ngx.stop)
        ngx.wait_ready()
        adopted = adopt.adopt(PORT, group="e2e")
        if len(adopted) != WORKERS:
            raise RuntimeError(f"adopted {len(adopted)} of {WORKERS} nginx workers")
        sel = Selections("e2e", stack)
        _wrk(1)  # warm up nginx, the caches and the socket tables
        results = alternate(rounds, {n: (lambda n=n: one_round(sel, n, seconds)) for n in names})
    for n, rs in results.items():
        print(f"{n:>15}: " + "; ".join(f"{r['rate']:,.0f}/s failed {r['failed']} placed {r['placed']:,}"
                                       for r in rs), flush=True)

    rate = {n: median(r["rate"] for r in rs) for n, rs in results.items()}
    rows = []
    for n in names:
        rs = results[n]
        rows.append([
            n,
            f"{rate[n]:,.0f}",
            span((r["rate"] for r in rs), "{:,.0f}"),
            f"{rate[n] / rate['kernel default']:.3f}",
            sum(r["failed"] for r in rs),
            f"{sum(r['requests'] for r in rs):,}",
            f"{sum(r['placed'] for r in rs):,}",
        ])
    per_round = sorted(r["rate"] / d["rate"] for r, d in zip(results["rpctl weighted"], results["kernel default"]))
    ratio = rate["rpctl weighted"] / rate["kernel default"]
    # Per round, not medians: the rounds drift far more than the selections differ within one.
    figure = plots.lines(
        "endtoend", f"New connections per second through nginx ({WORKERS} workers), each round", "connections/s",
        list(range(1, rounds + 1)), {n: [r["rate"] for r in results[n]] for n in names},
        xlabel="round (the selections alternate within each)", log2_x=False, from_zero=False,
    )
    verdict = "met" if ratio >= GOAL else "NOT met"
    body = f"""### End to end: new connections per second (issue 7, part 2)

```sh
./scripts/bench.sh endtoend
```

nginx (`worker_processes {WORKERS}`, `listen 127.0.0.1:{PORT} reuseport`, `return 200`
with a few bytes, access log off) adopted by rpctl (`rpctl adopt`), and
`wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS} -d{seconds}s -H 'Connection: close'`: every request a new
TCP connection over loopback, in a fresh network namespace.  The same
nginx and listeners throughout; each round switches the selection with
one setsockopt on one listener, {rounds} rounds per selection, alternating,
medians.  Placed by rpctl's program: connections the group's own counters
saw; in its rounds a few more than wrk's completed requests (the
connections in flight when wrk stops), in the others none.

""" + table(["selection", "connections/s", "range over rounds", "vs kernel default", "failed",
             "requests", "placed by rpctl's program"], rows) + f"""

{figure}

Goal: rpctl at least {GOAL} of the kernel default.  Measured: **{ratio:.3f}**
({verdict}; the median of the per-round ratios, each against the kernel default in the
same round, is {median(per_round):.3f}, ranging {per_round[0]:.3f}-{per_round[-1]:.3f}).  The figure shows why
medians over many rounds: the rate jumps between two levels about 10 % apart, whichever
selection a round has (the jumps show with no program attached too).  A selection costs
about a tenth of a microsecond (the data-path table) and a connection here about
{1e6 / rate["kernel default"] * 2:.0f} us of CPU (two CPUs, {rate["kernel default"]:,.0f} connections/s): the program
is well under the noise between rounds.  wrk, nginx and the kernel share
the machine's two CPUs, as a loopback benchmark must."""
    write_section(SECTION, body)

