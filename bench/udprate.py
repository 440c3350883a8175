"""UDP datagrams per second through four workers: rpctl with flow affinity
against the kernel's default selection.

Four worker processes each receive on one SO_REUSEPORT UDP socket of one
port, and count what they get.  Two sender processes send, as fast as
they can, from SENDER_FLOWS client sockets each on fixed 4-tuples (varied
127/8 sources): long-lived flows, which rpctl's flow table remembers after
their first datagram.  Every round switches the selection with one
setsockopt on one socket (detached: the kernel's own hash; attached: the
group's program) and counts the datagrams the workers received over
DURATION seconds; rounds alternate, medians.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import random
import socket
import time

from bench.common import alternate, median, span, table, write_section

SECTION = "udp-rate"
PORT = 7950
WORKERS = 4
SENDERS = 2
SENDER_FLOWS = 128
ROUNDS, QUICK_ROUNDS = 9, 1
DURATION, QUICK_DURATION = 2.0, 0.3   # seconds per round
PAYLOAD = b"x" * 64
GOAL = 0.95
NAMES = ("kernel default", "rpctl, flow affinity")


def _worker(sock: socket.socket, count) -> None:
    """Receive until killed; count[0] is what this worker received."""
    buf = bytearray(2048)
    sock.setblocking(True)
    while True:
        sock.recv_into(buf)
        count.value += 1


def _sender(index: int, go, stop, sent) -> None:
    """Send from SENDER_FLOWS fixed 4-tuples in turn while `go` is set, until `stop`."""
    rng = random.Random(index)
    clients = []
    while len(clients) < SENDER_FLOWS:
        c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            c.bind((f"127.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
                    rng.randrange(20000, 60000)))
        except OSError:
            c.close()
            continue
        clients.append(c)
    dest = ("127.0.0.1", PORT)
    n = 0
    while not stop.is_set():
        if not go.wait(0.1):
            continue
        for c in clients:
            try:
                c.sendto(PAYLOAD, dest)
            except OSError:  # a full socket buffer somewhere: the receivers are behind
                pass
            n += 1
        sent.value = n


class Rig:
    """The workers, the senders and the switch between the two selections."""

    def __init__(self, stack: contextlib.ExitStack):
        from rpctl.controller.kernel import sockets
        from rpctl.controller.store import group as groups

        from tests.support.traffic import Members

        ctx = multiprocessing.get_context("fork")
        self.members = Members(proto="udp", port=PORT)
        stack.callback(self.members.close)
        for _ in range(WORKERS):
            self.members.add()
        name = self.members.register_all()  # flow affinity: on by default for UDP
        self.group = groups.Group.open(name)
        stack.callback(self.group.close)
        self.sock = self.members.socks[0]
        self.counts = [ctx.Value(ctypes.c_uint64, 0, lock=False) for _ in range(WORKERS)]
        self.sent = [ctx.Value(ctypes.c_uint64, 0, lock=False) for _ in range(SENDERS)]
        self.go, self.stop = ctx.Event(), ctx.Event()
        procs = [ctx.Process(target=_worker, args=(s, c), daemon=True) for s, c in zip(self.members.socks, self.counts)]
        procs += [ctx.Process(target=_sender, args=(i, self.go, self.stop, s), daemon=True)
                  for i, s in enumerate(self.sent)]
        for p in procs:
            p.start()
        stack.callback(self._end, procs)
        self._detach, self._attach = sockets.detach_program, self.group.attach

    def _end(self, procs) -> None:
        self.stop.set()
        self.go.set()
        for p in procs:
            p.kill()
            p.join(5)

    def use(self, name: str) -> None:
        if name == "kernel default":
            self._detach(self.sock)
        else:
            self._attach(self.sock)

    def received(self) -> int:
        return sum(c.value for c in self.counts)

    def round(self, name: str, seconds: float) -> dict:
        self.use(name)
        self.go.set()
        time.sleep(0.1)  # senders and workers at full speed before the count starts
        before, t0 = self.received(), time.monotonic()
        time.sleep(seconds)
        got, t1 = self.received() - before, time.monotonic()
        self.go.clear()
        time.sleep(0.1)  # let the queues drain between rounds
        return {"rate": got / (t1 - t0), "received": got}


def run(quick: bool) -> None:
    from tests.support.netns import fresh_netns

    rounds = QUICK_ROUNDS if quick else ROUNDS
    seconds = QUICK_DURATION if quick else DURATION
    with fresh_netns("rpctl-bench-udp-"), contextlib.ExitStack() as stack:
        rig = Rig(stack)
        rig.round(NAMES[1], 0.3)  # every flow sends once with the program attached: the table knows them
        results = alternate(rounds, {n: (lambda n=n: rig.round(n, seconds)) for n in NAMES})
        members = rig.group.member_totals()[:WORKERS]
    for n, rs in results.items():
        print(f"{n:>22}: " + "; ".join(f"{r['rate']:,.0f}/s" for r in rs), flush=True)
    rate = {n: median(r["rate"] for r in rs) for n, rs in results.items()}
    per_round = sorted(r["rate"] / d["rate"] for r, d in zip(results[NAMES[1]], results[NAMES[0]]))
    ratio = rate[NAMES[1]] / rate[NAMES[0]]
    followed = sum(m["flow_datagrams"] for m in members)
    placed = sum(m["flows_created"] + m["flows_reassigned"] for m in members)
    rows = [[n, f"{rate[n]:,.0f}", span((r["rate"] for r in results[n]), "{:,.0f}"),
             f"{rate[n] / rate[NAMES[0]]:.3f}"] for n in NAMES]
    verdict = "met" if ratio >= GOAL else "NOT met"
    body = f"""### UDP datagrams per second through {WORKERS} workers (issue 15)

```sh
./scripts/bench.sh udprate
```

{WORKERS} worker processes, each receiving on one SO_REUSEPORT UDP socket of one port;
{SENDERS} sender processes sending {len(PAYLOAD)}-byte datagrams as fast as they can from
{SENDER_FLOWS} client sockets each, on fixed 4-tuples (long-lived flows), over loopback
in a fresh network namespace.  Each round switches the selection with one setsockopt on
one socket and counts what the workers received in {seconds:g} s; {rounds} rounds per
selection, alternating, medians.  The group has flow affinity (the default): after
their first datagram every flow's datagrams go by the flow table ({followed:,} datagrams
did, {placed:,} flows were placed by the weights).

""" + table(["selection", "datagrams/s received", "range over rounds", "vs kernel default"], rows) + f"""

Goal: at least {GOAL} of the kernel's default selection.  Measured: **{ratio:.3f}**
({verdict}; per round, against the kernel default of the same round:
{per_round[0]:.3f}-{per_round[-1]:.3f}, median {median(per_round):.3f})."""
    write_section(SECTION, body)
