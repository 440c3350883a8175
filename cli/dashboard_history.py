"""The dashboard's memory: the last minute of every member's totals, and the events seen.  Pure:
no I/O here.

The BPF program keeps only running totals per member; rates, recent shares
and the event list are differences between snapshots, so they live here
(History) and not in the kernel or in pinned state: a dashboard that starts
later simply has less history, and one that is killed leaves nothing behind.
"""

from __future__ import annotations

import bisect
import collections
from dataclasses import dataclass, field
from typing import Deque, Optional

from rpctl.controller.read.views import GroupView, MemberView

from .dashboard_events import Event, diff

BLOCKS = "▁▂▃▄▅▆▇█"

WINDOW = 60.0  # seconds of per-member totals kept (the sparkline's minute)
RATE_WINDOW = 1.0  # a rate is the slope over about this long
SHARE_WINDOW = 5.0  # observed share: over about this long
MAX_EVENTS = 200
SPARK_MAX = int(WINDOW)  # the widest sparkline: one block a second of the window

Key = tuple[str, str, int]  # (group, member name, socket cookie)


@dataclass
class Snapshot:
    """The groups as read at one moment.

    `time` is monotonic (rates must not jump with the wall clock); `wall`
    (epoch seconds) only labels events and may be left out.
    """

    time: float
    groups: list[GroupView] = field(default_factory=list)
    wall: Optional[float] = None


class _Series:
    """(time, cumulative total) samples of one member socket, oldest first."""

    __slots__ = ("times", "totals")

    def __init__(self) -> None:
        self.times: list[float] = []
        self.totals: list[int] = []

    def add(self, t: float, total: int) -> None:
        if self.totals and total < self.totals[-1]:
            # Counters only fall when the member's statistics were reset:
            # the old samples would yield a negative rate.
            self.times.clear()
            self.totals.clear()
        if self.times and t <= self.times[-1]:
            self.times[-1], self.totals[-1] = t, total
        else:
            self.times.append(t)
            self.totals.append(total)

    def trim(self, oldest: float) -> None:
        """Forget samples before `oldest`, keeping one at or before it for interpolation."""
        i = bisect.bisect_right(self.times, oldest) - 1
        if i > 0:
            del self.times[:i]
            del self.totals[:i]

    def at(self, t: float) -> Optional[float]:
        """Cumulative total at time t, interpolated; None before the first sample."""
        times = self.times
        if not times or t < times[0]:
            return None
        i = bisect.bisect_right(times, t)
        if i >= len(times):
            return float(self.totals[-1])
        t0, t1 = times[i - 1], times[i]
        c0, c1 = self.totals[i - 1], self.totals[i]
        return c0 + (c1 - c0) * (t - t0) / (t1 - t0)

    def delta(self, seconds: float) -> Optional[tuple[float, float]]:
        """(count, elapsed) over the last `seconds`, or as much of it as was seen."""
        if len(self.times) < 2:
            return None
        now = self.times[-1]
        start = max(now - seconds, self.times[0])
        if now <= start:
            return None
        begin = self.at(start)
        assert begin is not None
        return self.totals[-1] - begin, now - start


class History:
    """The last minute of per-member totals, and the events seen, from consecutive snapshots."""

    def __init__(self, window: float = WINDOW, max_events: int = MAX_EVENTS):
        self.window = window
        self.series: dict[Key, _Series] = {}
        self.events: Deque[Event] = collections.deque(maxlen=max_events)
        self.last: Optional[Snapshot] = None

    @staticmethod
    def key(group: str, m: MemberView) -> Key:
        return (group, m.name, m.cookie)

    def update(self, snap: Snapshot) -> list[Event]:
        """Record a snapshot; returns the events it brought (also appended to .events)."""
        seen = set()
        for g in snap.groups:
            for m in g.members:
                k = self.key(g.ref, m)
                seen.add(k)
                series = self.series.get(k)
                if series is None:
                    series = self.series[k] = _Series()
                series.add(snap.time, m.selections)
                series.trim(snap.time - self.window - 1.0)
        for k in [k for k in self.series if k not in seen]:
            del self.series[k]  # unregistered or replaced: nothing shows it any more
        new = diff(self.last.groups, snap.groups, snap.time, snap.wall) if self.last is not None else []
        self.events.extend(new)
        self.last = snap
        return new

    # Per member -------------------------------------------------------------------

    def rate(self, group: str, m: MemberView, seconds: float = RATE_WINDOW) -> Optional[float]:
        """New connections (datagrams) per second over the last ~`seconds`; None before two samples."""
        series = self.series.get(self.key(group, m))
        d = series.delta(seconds) if series else None
        return None if d is None else d[0] / d[1]

    def recent(self, group: str, m: MemberView, seconds: float) -> Optional[float]:
        series = self.series.get(self.key(group, m))
        d = series.delta(seconds) if series else None
        return None if d is None else d[0]

    def shares(self, g: GroupView, seconds: float = SHARE_WINDOW) -> dict[str, Optional[float]]:
        """Each member's fraction of the group's connections over the last ~`seconds`.

        None for all when nothing arrived then: an idle group has no observed share.
        """
        counts = {m.name: self.recent(g.ref, m, seconds) or 0.0 for m in g.members}
        total = sum(counts.values())
        return {name: (c / total if total > 0 else None) for name, c in counts.items()}

    def share(self, g: GroupView, m: MemberView, seconds: float = SHARE_WINDOW) -> Optional[float]:
        return self.shares(g, seconds).get(m.name)

    def group_rate(self, g: GroupView, seconds: float = RATE_WINDOW) -> Optional[float]:
        rates = [self.rate(g.ref, m, seconds) for m in g.members]
        known = [r for r in rates if r is not None]
        return sum(known) if known else None

    def per_second(self, group: str, m: MemberView, seconds: int = SPARK_MAX) -> list[Optional[float]]:
        """Rates of the last `seconds` whole seconds, oldest first; None where nothing was recorded."""
        series = self.series.get(self.key(group, m))
        if series is None or not series.times:
            return [None] * seconds
        now = series.times[-1]
        edges = [series.at(now - s) for s in range(seconds, -1, -1)]
        return [None if a is None or b is None else b - a for a, b in zip(edges, edges[1:])]

    def sparkline(
        self, group: str, m: MemberView, seconds: int = SPARK_MAX, scale: Optional[float] = None
    ) -> str:
        return sparkline(self.per_second(group, m, seconds), scale)


def sparkline(values: list[Optional[float]], scale: Optional[float] = None) -> str:
    """Per-second rates -> ▁..█ (relative to `scale`, default their maximum); blank where unknown.

    Zero is ▁ and anything above zero at least ▂, so a trickle is not
    mistaken for silence; the rest is proportional, rounded.
    """
    known = [v for v in values if v is not None]
    top = scale if scale is not None else max(known, default=0.0)
    out = []
    for v in values:
        if v is None:
            out.append(" ")
        elif v <= 0 or top <= 0:
            out.append(BLOCKS[0])
        else:
            out.append(BLOCKS[max(1, min(len(BLOCKS) - 1, int(v / top * (len(BLOCKS) - 1) + 0.5)))])
    return "".join(out)
