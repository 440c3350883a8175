"""UDP datagrams per second through four workers: rpctl with flow affinity
against the kernel's default selection and the select-only floor.

The load is C (bench/udprate.c, built here with gcc) so that neither side
is the bottleneck: four workers, each a process receiving with recvmmsg on
its own SO_REUSEPORT socket of one port, registered with rpctl by pid and
fd as `rpctl register` does; senders sending with sendmmsg from FLOWS client
sockets each, on fixed 4-tuples (varied 127/8 sources): long-lived flows,
which rpctl's flow table remembers after their first datagram.  The load
runs throughout; every window switches the selection with one setsockopt
on one socket (common.Selections) and counts, over WINDOW seconds, what the
workers received, what the senders sent and what the kernel dropped.  The
selections take turns within each round; the figure is the median of the
per-round ratios, with their spread.
"""

from __future__ import annotations

import contextlib
import mmap
import shutil
import signal
import struct
import subprocess
import tempfile
import time
from pathlib import Path

from bench.common import (
    RATIO_HEADER,
    Selections,
    cpu,
    describe,
    median,
    net_counters,
    paired_ratios,
    ratio_cells,
    span,
    spread,
    switched_windows,
    table,
    timed_note,
    write_section,
)

SECTION = "udp-rate"
PORT = 7950
HOST = "127.0.0.1"
WORKERS = 4
SENDERS = 2
FLOWS = 128                      # per sender
ROUNDS, QUICK_ROUNDS = 45, 2
WINDOW, QUICK_WINDOW = 0.3, 0.2  # seconds counted per selection per round
SETTLE = 0.05                    # seconds after a switch before the count starts
WARM_UP = 0.5                    # seconds of load before the first window
GOAL = 0.97
KERNEL, RPCTL = Selections.KERNEL, "rpctl, flow affinity"
NAMES = (KERNEL, Selections.FLOOR, RPCTL)
SOURCE = Path(__file__).with_suffix(".c")
CFLAGS = ("-O2", "-std=gnu11", "-Wall", "-Wextra", "-Werror")
# One slot of the counters file (struct slot in udprate.c): four u64 in a 64-byte line.
SLOT_SIZE, SLOT = 64, struct.Struct("=4Q")
READY_TIMEOUT = 10.0
# One sender and two workers on each of two CPUs (common.cpu: the first two
# this process may use).  With the machine shared by other busy work, the
# middle half of the per-round ratios was 0.02 wide pinned, 0.23 unpinned.
SINK_CPUS = (0, 1, 0, 1)
SENDER_CPUS = (0, 1)


def build(out_dir: Path) -> Path:
    """Compile udprate.c with the system's gcc into out_dir; the executable's path."""
    gcc = shutil.which("gcc")
    if gcc is None:
        raise RuntimeError("gcc is missing: the UDP rate benchmark builds its load in C "
                           "(apt-get install gcc libc6-dev, or scripts/provision.sh --with-tests)")
    exe = out_dir / "udprate"
    out = subprocess.run([gcc, *CFLAGS, "-o", str(exe), str(SOURCE)], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"gcc could not build {SOURCE.name}: {out.stderr.strip()}")
    return exe


class Counters:
    """The file the C processes count into, one slot each, read while they run."""

    def __init__(self, path: Path, slots: int):
        self.path, self.slots = path, slots
        path.write_bytes(bytes(SLOT_SIZE * slots))
        with open(path, "r+b") as f:
            self.map = mmap.mmap(f.fileno(), SLOT_SIZE * slots)

    def slot(self, index: int) -> tuple[int, int, int, int]:
        """(datagrams, calls, errors, ready) of one process."""
        return SLOT.unpack_from(self.map, index * SLOT_SIZE)

    def total(self, indexes: range, field: int = 0) -> int:
        return sum(self.slot(i)[field] for i in indexes)

    def close(self) -> None:
        self.map.close()


class Rig:
    """The workers and senders (C processes) and the group they load."""

    def __init__(self, stack: contextlib.ExitStack, exe: Path, tmp: Path):
        from rpctl.controller.store import group as groups

        from tests.support.traffic import Members

        self.counters = Counters(tmp / "counters", WORKERS + SENDERS)
        stack.callback(self.counters.close)
        self.sinks, self.senders = range(WORKERS), range(WORKERS, WORKERS + SENDERS)
        self.procs: list[subprocess.Popen] = []
        stack.callback(self._end)
        members = Members(proto="udp", port=PORT)
        stack.callback(members.close)
        name = ""
        for i in self.sinks:
            sock = members.add()
            proc = self._start([exe, "sink", sock.fileno(), self.counters.path, i, cpu(SINK_CPUS[i])],
                               pass_fds=[sock.fileno()])
            # As `rpctl register w<i> --pid PID --fd FD` does: the worker's own socket, by its process.
            name = groups.register(f"w{i}", proc.pid, sock.fileno()).group  # flow affinity: on for UDP
        group = groups.Group.open(name)
        stack.callback(group.close)
        self.selections = Selections(group, members.socks[0], stack)
        for k, i in enumerate(self.senders):
            self._start([exe, "send", HOST, PORT, FLOWS, 1 + k, self.counters.path, i, cpu(SENDER_CPUS[k])])
        self._wait_ready()

    def _start(self, argv: list, pass_fds=()) -> subprocess.Popen:
        proc = subprocess.Popen([str(a) for a in argv], pass_fds=pass_fds, stdin=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        self.procs.append(proc)
        return proc

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while not all(self.counters.slot(i)[3] for i in range(len(self.procs))):
            self.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"the UDP load was not ready after {READY_TIMEOUT:g} s")
            time.sleep(0.01)

    def check_alive(self) -> None:
        for p in self.procs:
            if p.poll() is not None:
                raise RuntimeError(f"{' '.join(p.args[:2])} exited {p.returncode}: "
                                   f"{p.stderr.read().decode(errors='replace').strip()}")

    def _end(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
        for p in self.procs:
            p.wait(5)
            p.stderr.close()

    def read(self) -> dict[str, int]:
        net = net_counters()
        return {
            "received": self.counters.total(self.sinks),
            "receive calls": self.counters.total(self.sinks, field=1),
            "sent": self.counters.total(self.senders),
            "send errors": self.counters.total(self.senders, field=2),
            # A full socket buffer (RcvbufErrors) is one kind of InErrors; a bad checksum another.
            "dropped": net["Udp.InErrors"] - net["Udp.InCsumErrors"],
        }


def run(quick: bool) -> None:
    from tests.support.netns import fresh_netns

    rounds = QUICK_ROUNDS if quick else ROUNDS
    seconds = QUICK_WINDOW if quick else WINDOW
    with fresh_netns("rpctl-bench-udp-"), tempfile.TemporaryDirectory(prefix="rpctl-udprate-") as tmp, \
            contextlib.ExitStack() as stack:
        rig = Rig(stack, build(Path(tmp)), Path(tmp))
        rig.selections.use(RPCTL)  # every flow sends with the program attached: the table knows them all
        time.sleep(WARM_UP)
        results = switched_windows(rounds, NAMES, rig.selections.use, rig.read, seconds, SETTLE,
                                   also=rig.selections.counters)
        rig.check_alive()
        members = rig.selections.group.member_totals()[:WORKERS]
    for n, rs in results.items():
        print(f"{n:>22}: " + "; ".join(f"{r['received/s']:,.0f}/s" for r in rs), flush=True)
    write_section(SECTION, report(results, members, rounds, seconds))


def report(results: dict, members: list[dict], rounds: int, seconds: float) -> str:
    rate = {n: median(r["received/s"] for r in rs) for n, rs in results.items()}
    ratios = {n: spread(paired_ratios(results, n, KERNEL, key="received/s")) for n in NAMES[1:]}
    followed = sum(m["flow_datagrams"] for m in members)
    placed = sum(m["flows_created"] + m["flows_reassigned"] for m in members)
    rows = []
    for n in NAMES:
        rs = results[n]
        received = sum(r["received"] for r in rs)
        rows.append([
            n,
            f"{rate[n]:,.0f}",
            span((r["received/s"] for r in rs), "{:,.0f}"),
            *ratio_cells(ratios.get(n)),
            f"{received / max(1, sum(r['sent'] for r in rs)):.2%}",
            f"{received / max(1, sum(r['receive calls'] for r in rs)):.0f}",
            f"{sum(r['dropped'] for r in rs):,}",
            f"{sum(r['send errors'] for r in rs):,}",
            f"{sum(r['placed'] for r in rs):,}",
        ])
    got = ratios[RPCTL]
    own = spread(paired_ratios(results, RPCTL, Selections.FLOOR, key="received/s"))
    verdict = "met" if got.median >= GOAL else "NOT met"
    cpus = len({cpu(k) for k in SENDER_CPUS + SINK_CPUS})
    cpu_ns = cpus * 1e9 / rate[KERNEL]
    return f"""### UDP datagrams per second through {WORKERS} workers (issue 15, issue 23)

```sh
./scripts/bench.sh udprate
```

The load is C (`bench/udprate.c`, built with gcc when the benchmark starts), so that
neither side is the bottleneck: {WORKERS} workers, each a process taking datagrams with
`recvmmsg` (up to 64 a call, a 200 us nap when none is queued, so that no sender pays
a wake-up) from its own SO_REUSEPORT UDP socket of one port, registered by pid and fd
as `rpctl register` does; {SENDERS} senders, each sending 64-byte datagrams with
`sendmmsg` (64 a call) as fast as it can from {FLOWS} client sockets on fixed 4-tuples
(long-lived flows from varied 127/8 sources).  Loopback in a fresh network namespace;
one sender and two workers pinned to each CPU.  The load runs throughout: each window
switches the selection with one setsockopt on one socket, waits {SETTLE:g} s, then counts
for {seconds:g} s what the workers received; {rounds} rounds of one window per selection,
in an order that rotates each round.  "select only" is the data-path benchmark's floor
(one `bpf_sk_select_reuseport` at hash & 3).  The group has flow affinity (the
default): after their first datagram every flow's datagrams go by the flow table
({followed:,} datagrams did, {placed:,} flows were placed by the weights).  The workers
keep up when they receive what was sent (the rest is in their queues when a window
closes) in calls of fewer than 64, and the kernel drops nothing (the namespace's UDP
`InErrors`, a full socket buffer among them, during the windows).

""" + table(["selection", "datagrams/s received (median)", "range over rounds", *RATIO_HEADER, "received of sent",
             "datagrams a receive", "dropped", "send errors", "selected by rpctl's program"], rows) + f"""

Goal: rpctl with flow affinity at least {GOAL} of the kernel's default, as the median of
per-round ratios (each rpctl window against the kernel-default window of the same
round).  Measured: **{got.median:.3f}** ({verdict}; {describe(got)}).
Against the select-only floor of the same round, which only chooses a socket:
{describe(own)}.  A datagram here costs about {cpu_ns / 1000:.1f} us of CPU ({cpus} CPUs, senders
and workers, at the kernel default's rate), so 1 % of the rate is about {cpu_ns / 100:.0f} ns a
datagram.{timed_note(results)}"""
