"""The soak's accounting: every failure given to the fault whose window it
falls in (the last fault injected before it), counted apart when that fault
causes it by definition (a SIGKILLed worker's own work; a SIGKILLed serve
loses nothing by definition); the run groups' workers each SIGKILL of serve
kept or lost; serve's resources per minute; the goals, met or not.

When a failure happened: a refused or reset TCP connection when it ends; a
moved UDP flow after its last answer from its member; a timed-out TCP connection when it started (its
end is TCP_TIMEOUT_MS later: a connection stuck behind a stopped worker
belongs to the stop); a broken QUIC connection when the client gave it up
(an echo it waited for in vain was sent 4 s before).
"""

from __future__ import annotations

import bisect
import collections
from dataclasses import dataclass, field

from bench._soak_load import TCP_TIMEOUT_MS, Failure

QUIC_TIMEOUT = 4.0
STEADY = "(before the first fault)"
RSS_FD_GROWTH = 0.05   # the goal: under 5 % after the warm-up


def started(f: Failure) -> float:
    if f.since:
        return f.since
    if f.what == "timeout":
        return f.t - TCP_TIMEOUT_MS / 1000
    if f.where == "quic" and "no echo in time" in f.detail:
        return f.t - QUIC_TIMEOUT
    return f.t


@dataclass
class Row:
    """One fault kind's count, and what it caused."""

    count: int = 0
    errors: list = field(default_factory=list)                 # its own steps that did not work
    refused: int = 0                                           # what rpctl refused as unsafe, rightly
    failed: collections.Counter = field(default_factory=collections.Counter)      # (group, what) -> n
    by_definition: collections.Counter = field(default_factory=collections.Counter)
    kept: int = 0                                              # run groups' workers kept through it (SIGKILL serve)
    lost: list = field(default_factory=list)                   # and those lost, each "group name pid -> pid"


def attribute(faults: list, failures: list[Failure]) -> dict[str, Row]:
    """Fault kind -> Row; failures before any fault under STEADY."""
    rows: dict[str, Row] = collections.defaultdict(Row)
    times = [f.t for f in faults]
    for f in faults:
        rows[f.kind].count += 1
        if f.error:
            rows[f.kind].errors.append(f"{f.detail}: {f.error}")
        rows[f.kind].refused += bool(f.refused)
        rows[f.kind].kept += f.kept
        rows[f.kind].lost += f.lost
    for failure in failures:
        key = (failure.where, failure.what)
        # A failure that lasted (a timeout, a QUIC echo waited for) is caused by definition by a
        # fault that loses work of its group while it lasted; else by the last fault before it began.
        lo, hi = bisect.bisect_right(times, started(failure)), bisect.bisect_right(times, failure.t)
        lossy = [f for f in faults[lo:hi] if failure.where in f.lossy]
        if lossy:
            rows[lossy[0].kind].by_definition[key] += 1
            continue
        fault = faults[lo - 1] if lo > 0 else None
        row = rows[fault.kind if fault else STEADY]
        if fault and failure.where in fault.lossy:
            row.by_definition[key] += 1
        else:
            row.failed[key] += 1
    return dict(rows)


def counted(rows: dict[str, Row], where: tuple[str, ...], by_definition: bool = False) -> int:
    return sum(n for r in rows.values() for (g, _), n in (r.by_definition if by_definition else r.failed).items()
               if g in where)


def minutes(samples: list[dict], began: float) -> list[dict]:
    """The last sample of serve's resources in each minute since `began`."""
    out: dict[int, dict] = {}
    for s in samples:
        out[int((s["t"] - began) // 60)] = s
    return [dict(out[m], minute=m + 1) for m in sorted(out)]


def growth(samples: list[dict], warmup: float, key: str, window: float = 60.0) -> tuple[float, int, float] | None:
    """How much `key` grew in the last serve process, from the `window` (s) after its warm-up
    to its last `window` (the mean of each): (growth, that serve's number, seconds from its
    warm-up's end to its end); None when it did not live through a warm-up and two windows."""
    last = max(s["serve"] for s in samples)
    own = [s for s in samples if s["serve"] == last]
    start, end = own[0]["t"], own[-1]["t"]
    first = [s[key] for s in own if start + warmup <= s["t"] < start + warmup + window]
    final = [s[key] for s in own if s["t"] > end - window]
    if not first or not final or end - window < start + warmup + window:
        return None
    return sum(final) / len(final) / (sum(first) / len(first)) - 1, last, end - start - warmup


@dataclass
class Goal:
    what: str
    met: bool
    figure: str


def goals(rows: dict[str, Row], tcp: int, tcp_goal: int, rss: tuple | None, fds: tuple | None,
          left: dict) -> list[Goal]:
    failed = counted(rows, ("web", "app"))
    moved = counted(rows, ("dns",))
    broken = counted(rows, ("quic",))
    errors = sum(len(r.errors) for r in rows.values())
    readers = counted(rows, ("readers",))
    kept = sum(r.kept for r in rows.values())
    lost = sum(len(r.lost) for r in rows.values())
    out = [
        Goal(f"at least {tcp_goal:,} TCP connections", tcp >= tcp_goal, f"{tcp:,}"),
        Goal("0 TCP connections failed (outside failures by definition)", failed == 0, str(failed)),
        Goal("0 UDP flows moved (outside by definition)", moved == 0, str(moved)),
        Goal("0 QUIC connections broken (outside by definition)", broken == 0, str(broken)),
        Goal("every fault's own steps worked (a new run or demo served, a bad file refused, ...)", errors == 0,
             str(errors)),
        Goal("every status, dashboard and metrics read answered", readers == 0, str(readers)),
        Goal("every run group's worker kept through serve's SIGKILLs (the same pid once the next serve is up)",
             lost == 0, f"{kept} kept, {lost} lost"),
    ]
    for key, value in (("RSS", rss), ("open fds", fds)):
        out.append(Goal(f"serve's {key} grew under {RSS_FD_GROWTH:.0%} after the warm-up",
                        value is not None and value[0] < RSS_FD_GROWTH,
                        "not measured (no serve lived long enough)" if value is None else
                        f"{value[0]:+.1%} (serve {value[1]}, over {value[2] / 60:.1f} minutes)"))
    for what, items in left.items():
        out.append(Goal(f"0 {what} left behind", not items, str(len(items)) + (f" ({items})" if items else "")))
    return out
