"""Shared pieces of the benchmarks: the machine line, medians and spreads,
alternating rounds (and windows of them under load that never stops), the
kernel's network counters, the switch between the kernel's selection, the
select-only floor and a group's program, and rewriting one section of
docs/benchmarks.md.

Each benchmark owns one section of docs/benchmarks.md, delimited by
``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->``; a run rewrites only its
own section, so benchmarks can be run one at a time or all together
(``python -m bench.run``).  Benchmarks reuse the kernel tests' namespace and
traffic helpers (tests.support.netns, tests.support.traffic) rather than copies.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import statistics
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterable, Mapping, NamedTuple, Sequence, TypeVar

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "benchmarks.md"
# The data-path benchmark's programs; rp_select_only is the floor: one
# bpf_sk_select_reuseport at hash & 3, the least a program that chooses does.
FLOOR_SOURCE = REPO / "bench" / "datapath.bpf.c"
FLOOR_MEMBERS = 4

T = TypeVar("T")


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def span(values: Iterable[float], fmt: str = "{:.0f}") -> str:
    """'lowest-highest' of a benchmark's rounds, each formatted with fmt."""
    vs = list(values)
    return f"{fmt.format(min(vs))}-{fmt.format(max(vs))}"


def alternate(rounds: int, variants: Mapping[str, Callable[[], T]]) -> dict[str, list[T]]:
    """Run every variant once per round, rotating the order each round so
    that drift of the machine (thermal, other load) spreads over all."""
    names = list(variants)
    results: dict[str, list[T]] = {n: [] for n in names}
    for r in range(rounds):
        k = r % len(names)
        for n in names[k:] + names[:k]:
            results[n].append(variants[n]())
    return results


class Spread(NamedTuple):
    """Where a benchmark's per-round figures lie: the median, the middle half
    (first to third quartile) and the extremes."""

    median: float
    q1: float
    q3: float
    low: float
    high: float
    rounds: int


def spread(values: Iterable[float]) -> Spread:
    vs = sorted(values)
    if not vs:
        raise ValueError("no rounds to summarise")
    # One round (quick mode) has no quartiles of its own: the middle half is that round.
    q1, _, q3 = statistics.quantiles(vs, n=4, method="inclusive") if len(vs) > 1 else vs * 3
    return Spread(statistics.median(vs), q1, q3, vs[0], vs[-1], len(vs))


def describe(s: Spread, fmt: str = "{:.3f}") -> str:
    """'median M, middle half Q1-Q3, all N rounds LOW-HIGH'."""
    return (f"median {fmt.format(s.median)}, middle half {fmt.format(s.q1)}-{fmt.format(s.q3)}, "
            f"all {s.rounds} rounds {fmt.format(s.low)}-{fmt.format(s.high)}")


# A table's columns for a selection's per-round ratios to a reference (ratio_cells).
RATIO_HEADER = ("vs kernel default, per round", "middle half", "all rounds")


def ratio_cells(s: Spread | None) -> list[str]:
    """RATIO_HEADER's cells of one row: the median, middle half and extremes
    of its per-round ratios, or the reference's own row (None)."""
    if s is None:
        return ["1", "", ""]
    return [f"{s.median:.3f}", f"{s.q1:.3f}-{s.q3:.3f}", f"{s.low:.3f}-{s.high:.3f}"]


def paired_ratios(results: Mapping[str, Sequence[Mapping[str, float]]], name: str, reference: str,
                  key: str = "rate") -> list[float]:
    """Round by round, `name`'s figure over `reference`'s figure of the same round."""
    return [r[key] / d[key] for r, d in zip(results[name], results[reference])]


def switched_windows(rounds: int, names: Sequence[str], use: Callable[[str], None],
                     read: Callable[[], Mapping[str, float]], seconds: float, settle: float,
                     also: Callable[[], Mapping[str, float]] | None = None) -> dict[str, list[dict[str, float]]]:
    """Rounds of windows under load that runs throughout: per round, every
    selection in turn (the order rotated each round, as `alternate` does) is
    switched on with use(name), given `settle` seconds, then counted over a
    window of `seconds`.  read() returns cumulative counters and is timed (keep
    it quick); also() returns more of them, read just after and not timed (a
    program's own counters, a few ms).  A window's result is how much each
    counter grew, with "seconds" (the window's length) and each of read()'s
    counters per second as "<counter>/s".

    Adjacent windows share the machine's state of the moment (other load,
    where the scheduler put things), which separate runs of a load generator
    do not; and no window has a generator's start or end in it."""

    def snapshot() -> tuple[float, Mapping[str, float], Mapping[str, float]]:
        t0 = time.monotonic()
        timed = read()
        t = (t0 + time.monotonic()) / 2
        return t, timed, also() if also else {}

    def window(name: str) -> dict[str, float]:
        use(name)
        time.sleep(settle)
        t0, before, more_before = snapshot()
        time.sleep(seconds)
        t1, after, more_after = snapshot()
        out = {k: after[k] - before[k] for k in after}
        out |= {f"{k}/s": v / (t1 - t0) for k, v in out.items()}
        out |= {k: more_after[k] - more_before[k] for k in more_after}
        out["seconds"] = t1 - t0
        return out

    return alternate(rounds, {n: (lambda n=n: window(n)) for n in names})


def cpu(k: int) -> int:
    """The k-th CPU this process may run on, counting round: a benchmark that
    pins to "CPU 0 and CPU 1" gets the first two it was given, or its one."""
    allowed = sorted(os.sched_getaffinity(0))
    return allowed[k % len(allowed)]


def net_counters(text: Mapping[str, str] | None = None) -> dict[str, int]:
    """The calling thread's network namespace's counters of /proc/net/snmp and
    /proc/net/netstat, as "Udp.InErrors", "Tcp.PassiveOpens",
    "TcpExt.ListenDrops", ...  (`text`: those files' contents, for tests)."""
    if text is None:
        text = {f: Path(f"/proc/thread-self/net/{f}").read_text() for f in ("snmp", "netstat")}
    out = {}
    for content in text.values():
        lines = content.splitlines()
        # Each group is two lines: "Proto: Name1 Name2 ..." then "Proto: 1 2 ...".
        for names, values in zip(lines[::2], lines[1::2]):
            proto, *keys = names.split()
            _, *numbers = values.split()
            out |= {f"{proto.rstrip(':')}.{k}": int(v) for k, v in zip(keys, numbers)}
    return out


class Selections:
    """The three ways of selecting among a group's sockets, switched with one
    setsockopt on any of them (it attaches to the whole reuseport group):

      KERNEL  no program attached: the kernel's own reuseport hash;
      FLOOR   the data-path benchmark's floor program, selecting from the
              group's own socket array (members at 0..3) at hash & 3;
      any other name: the group's program.
    """

    KERNEL, FLOOR = "kernel default", "select only"

    def __init__(self, group, sock, stack: contextlib.ExitStack):
        from rpctl.controller.contract import abi
        from rpctl.controller.kernel import loader

        used = [i for i, m in enumerate(group.members()) if m.flags & abi.RP_MEMBER_USED]
        # A socket belongs to one socket array at most: the floor selects from the group's.
        if used != list(range(FLOOR_MEMBERS)):
            raise RuntimeError(f"members at indexes {used}, the floor program selects 0..{FLOOR_MEMBERS - 1}")
        self.group, self.sock = group, sock
        self.timed_reads = 0
        self.floor_fd = loader.compile_and_load(str(FLOOR_SOURCE), "rp_select_only", {"socks": group.maps["socks"]},
                                                migrate=False)
        stack.callback(os.close, self.floor_fd)

    def use(self, name: str) -> None:
        from rpctl.controller.kernel import sockets

        if name == self.KERNEL:
            sockets.detach_program(self.sock)
        elif name == self.FLOOR:
            sockets.attach_program(self.sock, self.floor_fd)
        else:
            self.group.attach(self.sock)

    def placed(self) -> int:
        """What the group's program has selected so far (connections, or datagrams)."""
        from rpctl.controller.contract import abi

        return sum(abi.selections(t) for t in self.group.member_totals())

    def timed(self) -> int:
        """How many calls so far found the kernel timing every program run
        (kernel.bpf_stats_enabled: on while any process holds BPF_ENABLE_STATS,
        as the data-path benchmark does), which adds two clock reads to each
        run of a program and none to the kernel's own selection."""
        self.timed_reads += Path("/proc/sys/kernel/bpf_stats_enabled").read_text().strip() != "0"
        return self.timed_reads

    def counters(self) -> dict[str, int]:
        """placed() and timed(), for switched_windows' `also`."""
        return {"placed": self.placed(), "timed": self.timed()}


def timed_note(results: Mapping[str, Sequence[Mapping[str, float]]]) -> str:
    """A sentence for the windows whose "timed" count grew (see Selections.timed), or ""."""
    n = sum(1 for rs in results.values() for r in rs if r.get("timed"))
    return (f"  In {n} windows another process had the kernel time every program run (bpf_stats), "
            "which slows the programs' windows and not the kernel default's." if n else "")


def _first_line(cmd: Sequence[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "?"
    return out.strip().splitlines()[0] if out.strip() else "?"


def machine() -> str:
    """One line naming what the figures were measured on."""
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    debian = "?"
    try:
        debian = Path("/etc/debian_version").read_text().strip()
    except OSError:
        pass
    # The load average at the time: on a machine shared with other work, how busy it was.
    return (
        f"{os.cpu_count()} CPUs ({cpu}), {mem_gib:.0f} GiB, Debian {debian}, "
        f"kernel {platform.release().split('-')[0]}, Python {platform.python_version()}, "
        f"load average {os.getloadavg()[0]:.1f} at the start"
    )


def table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# wrk ----------------------------------------------------------------------------------

_ERRORS_RE = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_NON2XX_RE = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_REQUESTS_RE = re.compile(r"(\d+) requests in ([\d.]+)(us|ms|s|m|h)\b")
# wrk writes a duration in the largest unit it fills: "900.50ms", "6.08s", "1.40m".
_SECONDS_PER = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_wrk(text: str) -> dict:
    """wrk's summary -> requests, seconds, rate, errors by kind, non-2xx, failed."""
    m = _REQUESTS_RE.search(text)
    if not m:
        raise ValueError(f"no request count in wrk output: {text!r}")
    requests = int(m.group(1))
    seconds = float(m.group(2)) * _SECONDS_PER[m.group(3)]
    errors = dict.fromkeys(("connect", "read", "write", "timeout"), 0)
    e = _ERRORS_RE.search(text)
    if e:
        errors = dict(zip(errors, map(int, e.groups())))
    n = _NON2XX_RE.search(text)
    non2xx = int(n.group(1)) if n else 0
    return {
        "requests": requests,
        "seconds": seconds,
        "rate": requests / seconds if seconds else 0.0,
        "errors": errors,
        "non2xx": non2xx,
        "failed": sum(errors.values()) + non2xx,
    }


def wrk_command(url: str, threads: int, connections: int, seconds: float) -> list[str]:
    """wrk opening a new connection per request (`Connection: close`)."""
    return ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds:g}s", "-H", "Connection: close", url]


def write_section(name: str, body: str, doc: Path | None = None) -> None:
    """Replace (or append) the section NAME of docs/benchmarks.md with BODY,
    stamped with the machine line."""
    # Looked up at call time: bench.run --quick points DOC at a scratch copy.
    doc = doc or DOC
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{body.rstrip()}\n\nMachine: {machine()}.\n{end}"
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    doc.write_text(text)
