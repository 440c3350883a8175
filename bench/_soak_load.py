"""The soak's steady clients, each noting when something went wrong (time.monotonic seconds):

- TcpLoad: bench/soaktcp.c (built here with gcc), new connections to web and
  app at a fixed rate, every connection's outcome counted;
- UdpFlows: long-lived UDP flows to dns (fixed 4-tuples), each checking that
  every answer comes from the member that answered its first datagram;
- QuicLoad: tests/support/quic_client.py's long-lived QUIC connections to
  quic, asked every second how many broke, and moved to new source ports
  (migrated) every MIGRATE_EVERY seconds.
"""

from __future__ import annotations

import collections
import random
import re
import selectors
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.quic import Clients

SOURCE = Path(__file__).resolve().parent / "soaktcp.c"
OUTCOMES = ("ok", "refused", "reset", "timeout", "wrong", "other")
TCP_TIMEOUT_MS = 8000   # longer than any SIGSTOP the soak sends (a stopped worker's queue waits, then is served)
MIGRATE_EVERY = 10.0


def build(out_dir: Path) -> Path:
    gcc = shutil.which("gcc")
    if gcc is None:
        raise RuntimeError("gcc is missing: the soak builds its TCP clients in C (apt-get install gcc libc6-dev)")
    exe = out_dir / "soaktcp"
    out = subprocess.run([gcc, "-O2", "-Wall", "-o", str(exe), str(SOURCE)], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"gcc could not build {SOURCE.name}: {out.stderr.strip()}")
    return exe


@dataclass
class Failure:
    t: float          # time.monotonic()
    where: str        # the group (TCP: by port; UDP: dns; QUIC: quic)
    what: str         # refused, reset, timeout, wrong, other; moved; broken
    detail: str = ""
    since: float = 0.0  # when it may have begun, if before t (a moved flow: its last answer from its member)


class TcpLoad:
    """soaktcp over `ports` ({port: (group, rate, in flight at most)}) until stop()."""

    def __init__(self, exe: Path, ports: dict):
        self.groups = {p: g for p, (g, _, _) in ports.items()}
        argv = [str(exe), str(TCP_TIMEOUT_MS)] + [f"{p}:{r}:{n}" for p, (_, r, n) in ports.items()]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.failures: list[Failure] = []
        self.totals: dict[str, dict] = {g: dict.fromkeys(OUTCOMES, 0) for g in self.groups.values()}
        self.series: list[tuple[float, str, dict]] = []   # (t, group, running totals), every second
        self.reader = threading.Thread(target=self._read, name="soak-tcp", daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            kind, t, port, *rest = line.split()
            when, group = int(t) / 1e9, self.groups[int(port)]
            if kind == "F":
                self.failures.append(Failure(when, group, rest[0], f"errno {rest[1]}" if rest[1] != "0" else ""))
            elif kind == "S":
                counts = dict(zip(OUTCOMES, map(int, rest)))
                self.totals[group] = counts
                self.series.append((when, group, counts))

    def connections(self) -> int:
        return sum(sum(c.values()) for c in self.totals.values())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.reader.join(10)
        self.proc.stdout.close()


def _source(rng: random.Random) -> str:
    return f"127.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"


@dataclass
class Flow:
    sock: socket.socket
    member: str = ""        # who answered first (or since the last move)
    sent: float = 0.0
    answered: float = 0.0
    moves: int = 0


@dataclass
class UdpFlows:
    """`count` flows to 127.0.0.1:port, each sending a datagram every `interval` s (jittered)."""

    port: int
    count: int
    seed: int
    interval: float = 0.5
    failures: list = field(default_factory=list)
    datagrams: int = 0
    answers: int = 0

    def __post_init__(self) -> None:
        rng = random.Random(self.seed)
        self.flows: dict[int, Flow] = {}
        self.sel = selectors.DefaultSelector()
        while len(self.flows) < self.count:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                s.bind((_source(rng), rng.randrange(20000, 60000)))
            except OSError:
                s.close()
                continue
            s.connect(("127.0.0.1", self.port))
            s.setblocking(False)
            self.flows[s.fileno()] = Flow(s)
            self.sel.register(s, selectors.EVENT_READ)
        self.stopping = False
        self.thread = threading.Thread(target=self._run, name="soak-udp", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        rng = random.Random(self.seed + 1)
        due = {fd: time.monotonic() + rng.uniform(0, self.interval) for fd in self.flows}
        while not self.stopping:
            now = time.monotonic()
            for fd, at in due.items():
                if at <= now:
                    f = self.flows[fd]
                    try:
                        f.sock.send(b"soak")
                        self.datagrams += 1
                    except OSError:
                        pass  # ECONNREFUSED of an earlier datagram (no socket at the port then): sent again later
                    f.sent = now
                    due[fd] = now + self.interval * rng.uniform(0.5, 1.5)
            for key, _ in self.sel.select(0.01):
                self._answer(self.flows[key.fd])

    def _answer(self, f: Flow) -> None:
        while True:
            try:
                data = f.sock.recv(256)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # an ICMP error queued on the socket: read past it
            self.answers += 1
            before, f.answered = f.answered, time.monotonic()
            member = data.decode(errors="replace").strip()
            if f.member and member != f.member:
                # It moved after its last answer from its member (a stopped member answers late).
                f.moves += 1
                self.failures.append(Failure(f.answered, "dns", "moved", f"{f.member} -> {member}", since=before))
            f.member = member

    def members(self) -> collections.Counter:
        return collections.Counter(f.member.rsplit("-", 1)[0] for f in self.flows.values() if f.member)

    def stop(self) -> None:
        self.stopping = True
        self.thread.join(10)
        for f in self.flows.values():
            f.sock.close()


class QuicLoad:
    """n long-lived QUIC connections; broken ones are noted as the reports show them."""

    def __init__(self, port: int, cafile: str, n: int):
        self.clients = Clients(f"127.0.0.1:{port}", cafile=cafile, n=n, interval=0.5, timeout=4.0, ready_timeout=60)
        self.failures: list[Failure] = []
        self.last = self.clients.ready
        self.started = self.clients.ready["started"]   # asyncio's loop.time() is time.monotonic()
        self.migrations = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="soak-quic", daemon=True)
        self.thread.start()

    def _note(self, report: dict) -> None:
        """New breaks, each at the time the client gave it ("... t=5.4s": since the client started)."""
        for reason, n in report["reasons"].items():
            new = n - self.last["reasons"].get(reason, 0)
            if new > 0:
                m = re.search(r"t=([\d.]+)s\)$", reason)
                when = self.started + float(m.group(1)) if m else time.monotonic()
                self.failures += [Failure(when, "quic", "broken", reason) for _ in range(new)]
        for _ in range(report["handshake_failures"] - self.last["handshake_failures"]):
            self.failures.append(Failure(time.monotonic(), "quic", "handshake failed"))
        self.last = report

    def _run(self) -> None:
        next_migrate = time.monotonic() + MIGRATE_EVERY
        while not self.stopping.wait(1.0):
            self._note(self.clients.report())
            if time.monotonic() >= next_migrate:
                self.migrations += self.clients.migrate()
                next_migrate += MIGRATE_EVERY

    def stop(self) -> dict:
        self.stopping.set()
        self.thread.join(30)
        final = self.clients.stop()
        self._note(final)
        self.clients.close()
        return final
