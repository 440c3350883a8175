"""A snapshot -> what `rpctl dashboard` shows.  Pure: no I/O here.

render() returns a renderable that is never taller than `height` nor wider
than `width`: columns are dropped by importance, rows are summarised.  The
rates and shares it shows come from the History (dashboard_history.py), the
events at its foot from dashboard_events.py, and the order of many hosts'
groups from dashboard_triage.py.
"""

from __future__ import annotations

import time as _time
from typing import Optional

from rich.console import Group as RenderGroup
from rich.console import RenderableType
from rich.text import Text
from rpctl.controller.read.views import GroupView, MemberState, MemberView

from .dashboard_events import EVENT_STYLE, Event
from .dashboard_history import SPARK_MAX, History, Snapshot, sparkline
from .dashboard_triage import by_urgency, needs_a_look
from .layout import GAP, column_widths, fit
from .layout import lines as table_lines
from .states import STATE_STYLE, STATE_SYMBOL, state_counts
from .text import (
    UNREACHABLE,
    counter_texts,
    flow_table_text,
    generation_lines,
    mode_text,
    opt,
    pct,
    pid_text,
    pin_text,
    rate_text,
    rate_unit,
    unmanaged_warning,
)

SPARK_MIN = 10  # a narrower sparkline says nothing: drop the column instead
NAME_MAX = 24  # longer member names are cut with an ellipsis


def _count(n: Optional[int]) -> str:
    if n is None:
        return "-"
    if n < 100_000:
        return str(n)
    if n < 10_000_000:
        return f"{n / 1000:.0f}k"
    return f"{n / 1_000_000:.0f}M"


def _state_text(m: MemberView) -> Text:
    state = m.state
    return Text(f"{STATE_SYMBOL[state]} {state}", style=STATE_STYLE[state])


def _cut(s: str, width: int) -> str:
    return s if len(s) <= width else s[: max(0, width - 1)] + "…"


# Columns in the order they are shown; DROP_ORDER says which go first when space runs out.
COLUMNS = ("name", "pid", "state", "weight", "target", "observed", "rate", "spark", "queue", "flows", "migrated",
           "fallback", "pin")
DROP_ORDER = ("pid", "pin", "fallback", "migrated", "spark", "queue", "flows", "target", "weight", "rate", "observed")
RIGHT = {"pid", "weight", "target", "observed", "rate", "queue", "flows", "migrated", "fallback"}


def _member_cells(g: GroupView, m: MemberView, history: History, shares: dict[str, Optional[float]]) -> dict:
    return {
        "name": _cut(m.name, NAME_MAX),
        "pid": pid_text(m),
        "state": _state_text(m),
        "weight": str(m.weight),
        "target": pct(m.target_share),
        "observed": pct(shares.get(m.name)),
        "rate": rate_text(m.rate if m.rate is not None else history.rate(g.ref, m)),
        "queue": opt(m.queue),
        "flows": opt(m.flows),
        "migrated": _count(m.migrated),
        "fallback": _count(m.fallback),
        "pin": pin_text(g, m),
    }


def _headers(g: GroupView, spark_width: int) -> dict[str, str]:
    return {
        "name": "member", "pid": "pid", "state": "state", "weight": "weight", "target": "target",
        "observed": "observed", "rate": rate_unit(g), "spark": f"last {spark_width}s", "queue": "queue",
        "flows": "flows", "migrated": "migrated", "fallback": "fallback", "pin": "pin",
    }


def choose_columns(widths: dict[str, int], width: int) -> tuple[list[str], int]:
    """Columns that fit `width`, dropping by DROP_ORDER; and the sparkline's width (0 = none).

    `widths` holds the widest cell (header included) of every column but
    the sparkline, which takes what is left, from SPARK_MIN up to a minute.
    """
    shown = [c for c in COLUMNS if c in widths or c == "spark"]
    for victim in (None,) + DROP_ORDER:
        if victim is not None and victim in shown:
            shown.remove(victim)
        fixed = sum(widths[c] for c in shown if c != "spark") + GAP * (len(shown) - 1)
        if "spark" in shown:
            spark = min(SPARK_MAX, width - fixed)
            if spark >= SPARK_MIN:
                return shown, spark
            continue
        if fixed <= width:
            return shown, 0
    return shown, 0  # name and state alone: the table cuts the name if even they do not fit


def _header_lines(g: GroupView, history: History, width: int) -> list[Text]:
    """Group header segments, packed greedily into lines of `width` (a segment is never split)."""
    rate = history.group_rate(g) if g.instance is None else sum(m.rate or 0.0 for m in g.members)
    migrated = sum(m.migrated for m in g.members)
    fallback = sum(m.fallback for m in g.members)
    states = state_counts(g.members)
    segments = [
        *([Text(g.instance, style="bold")] if g.instance is not None else []),
        Text(g.name, style="bold reverse"),
        Text(g.endpoint, style="bold"),
        Text(f"{g.proto} {mode_text(g)}", style="bold" if g.mode != "weighted" else ""),
        Text(f"prog {g.prog_id}"),
        Text(f"{rate_text(rate)} {rate_unit(g)}", style="bold"),
        # Without listener migration (kernel < 5.14) a closing member's queue is not placed by
        # the program: "migrated 0" would read as "nothing to migrate".
        Text(f"migrated {_count(migrated)}") if g.migration else Text("no migration", style="yellow"),
        Text(f"fallback {_count(fallback)}"),
        # The group's counters under their one name; the pin ones in pinned modes only.
        *(Text(text) for text in counter_texts(g, _count)),
        *([Text(flow_table_text(g) or "")] if g.flow_table is not None else []),
        Text(f"{len(g.members)} members" + (f" ({states})" if states else "")),
    ]
    lines: list[Text] = []
    line = Text()
    for seg in segments:
        seg.truncate(width, overflow="ellipsis")
        if len(line) and len(line) + 2 + len(seg) > width:
            lines.append(line)
            line = Text()
        if len(line):
            line.append("  ")
        line.append_text(seg)
    lines.append(line)
    warning = unmanaged_warning(g)
    if warning:
        lines.append(Text(warning, style="bold yellow"))
    for t in lines:
        t.no_wrap = True
        t.overflow = "ellipsis"
    return lines


def pick_rows(members: list[MemberView], n: int) -> list[MemberView]:
    """`n` members to show when not all fit: the ones not active first (a drain in progress or
    a gone member is what the operator is watching), then the first active ones; in index order."""
    urgent = [m for m in members if m.state != MemberState.ACTIVE][:n]
    chosen = {id(m) for m in urgent}
    for m in members:
        if len(chosen) >= n:
            break
        chosen.add(id(m))
    return [m for m in members if id(m) in chosen]


def _summary(members: list[MemberView]) -> str:
    return f"+{len(members)} more members ({state_counts(members)})"


def _group_table(g: GroupView, history: History, width: int, rows: int) -> list[RenderableType]:
    """The member table of one group, in at most 1 + `rows` lines (header included).

    Lines are laid out here rather than by rich's Table: the widths are
    computed anyway to choose the columns, and a Table costs about ten times
    the CPU per frame, which a dashboard left running pays four times a second.
    """
    shares = history.shares(g) if g.instance is None else {m.name: m.observed_share for m in g.members}
    shown = g.members if len(g.members) <= rows else pick_rows(g.members, max(0, rows - 1))
    cells = [_member_cells(g, m, history, shares) for m in shown]
    heads = _headers(g, SPARK_MAX)
    # The flows column only for a group with a flow table (UDP with flow affinity).
    widths = column_widths(
        {c: heads[c] for c in COLUMNS if c != "spark" and (c != "flows" or g.flow_table is not None)}, cells
    )
    columns, spark = choose_columns(widths, width)
    heads = _headers(g, spark)
    if spark:
        # One scale for the whole group: a member at half the rate of another shows half as tall.
        rates = [history.per_second(g.ref, m, spark) for m in shown]
        top = max((v for rate in rates for v in rate if v is not None), default=0.0)
        for r, rate in zip(cells, rates):
            r["spark"] = Text(sparkline(rate, top), style="green")
    widths["spark"] = spark
    fit(widths, columns, width, shrink="name")  # when not even name and state fit: cut the name
    out: list[RenderableType] = list(table_lines(columns, heads, cells, widths, RIGHT))
    # Summaries are lines of their own: as rows they would widen the name column.
    if len(shown) < len(g.members):
        picked = {id(m) for m in shown}
        rest = [m for m in g.members if id(m) not in picked]
        out.append(Text(_summary(rest), style="dim italic", no_wrap=True, overflow="ellipsis"))
    # A deploy in progress: each server generation's state and share (decision 0021).
    out += [Text(line, style="cyan", no_wrap=True, overflow="ellipsis") for line in generation_lines(g)]
    if g.unreachable:
        out.append(Text(UNREACHABLE, style="bold red", no_wrap=True, overflow="ellipsis"))
    elif not g.members:
        out.append(Text("no members", style="dim", no_wrap=True, overflow="ellipsis"))
    return out


def _more_groups(rest: list[GroupView], fleet: bool) -> str:
    """The line that stands for the groups that did not fit."""
    if not fleet:
        return f"+{len(rest)} more groups: {', '.join(g.name for g in rest)}"
    looks = sum(needs_a_look(g) for g in rest)
    return f"... and {len(rest)} more groups, " + (f"{looks} of them need a look" if looks else "all healthy")


def _event_line(e: Event, now: float, width: int) -> Text:
    if e.wall is not None:
        stamp = _time.strftime("%H:%M:%S", _time.localtime(e.wall))
    else:
        stamp = f"{max(0.0, now - e.time):5.1f}s ago"
    t = Text(no_wrap=True, overflow="ellipsis")
    t.append(stamp, style="dim")
    t.append("  ")
    t.append(e.group, style="bold")
    t.append("  ")
    t.append(e.text, style=EVENT_STYLE[e.kind])
    t.truncate(width, overflow="ellipsis")
    return t


def _allocate(needs: list[int], budget: int) -> list[int]:
    """Share `budget` rows among groups needing `needs` rows: each gets a fair part, spare goes on."""
    got = [0] * len(needs)
    left = budget
    while left > 0:
        hungry = [i for i, n in enumerate(needs) if got[i] < n]
        if not hungry:
            break
        part = max(1, left // len(hungry))
        for i in hungry:
            take = min(part, needs[i] - got[i], left)
            got[i] += take
            left -= take
            if left == 0:
                break
    return got


def render(snapshot: Snapshot, history: History, width: int, height: int, hint: str = "") -> RenderableType:
    """One frame: a title line, per group a header and a member table, then recent events.

    Never more than `height` lines nor wider than `width`.  Rows that do not
    fit are summarised per group; events fill whatever the tables leave.
    `hint` (e.g. "q quits") ends the title line.
    """
    width = max(20, width)
    height = max(3, height)
    groups = snapshot.groups
    # Many hosts through Prometheus: what needs a look comes first, the healthy rest is summarised.
    fleet = any(g.instance is not None for g in groups)
    if fleet:
        groups = by_urgency(groups)
    title = Text(no_wrap=True, overflow="ellipsis")
    title.append("rpctl dashboard", style="bold")
    title.append(f"  {len(groups)} group{'s' if len(groups) != 1 else ''}")
    if snapshot.wall is not None:
        title.append("  " + _time.strftime("%H:%M:%S", _time.localtime(snapshot.wall)))
    if hint:
        title.append(f"  ({hint})", style="dim")
    title.truncate(width, overflow="ellipsis")
    parts: list[RenderableType] = [title]
    left = height - 1
    if not groups:
        parts.append(Text("no group in this network namespace (yet): `rpctl register` makes one",
                          style="dim", no_wrap=True, overflow="ellipsis"))
        left -= 1

    events = list(history.events)
    # The footer keeps a few lines whatever the tables want: what just happened matters most.
    events_min = min(len(events), max(1, height // 8)) if height >= 12 else 0
    footer_min = 1 + events_min if height >= 8 else 0

    headers = [_header_lines(g, history, width) for g in groups]
    # Groups that do not get even a header, a table header and one row are summarised in one line.
    # Across hosts a group is shown whole or not at all (the first one, cut, if nothing else fits):
    # a host's header with its members summarised away says nothing the summary line does not.
    least = [max(1, len(g.members)) if fleet else 1 for g in groups]
    shown_groups = len(groups)
    while shown_groups:
        chrome = sum(len(h) + 1 for h in headers[:shown_groups])
        extra = 1 if shown_groups < len(groups) else 0
        if chrome + sum(least[:shown_groups]) + extra + footer_min <= left:
            break
        if shown_groups == 1 and fleet:
            break
        shown_groups -= 1
    chrome = sum(len(h) + 1 for h in headers[:shown_groups])
    more_groups = len(groups) - shown_groups
    rows_budget = max(0, left - chrome - (1 if more_groups else 0) - footer_min)
    needs = [max(1, len(g.members)) for g in groups[:shown_groups]]
    rows = _allocate(needs, rows_budget)
    for g, head, r in zip(groups, headers, rows):
        parts.extend(head)
        parts.extend(_group_table(g, history, width, r))
        left -= len(head) + 1 + r
    if more_groups:
        parts.append(Text(_more_groups(groups[shown_groups:], fleet), style="dim italic", no_wrap=True,
                          overflow="ellipsis"))
        left -= 1

    if left >= 1 and (footer_min or left >= 2):
        n = min(len(events), left - 1)
        rule = Text(no_wrap=True, overflow="ellipsis")
        rule.append("events", style="bold")
        rule.append(f"  (last {n} of {len(events)})" if n < len(events) else "" if events else "  none yet",
                    style="dim")
        parts.append(rule)
        for e in events[len(events) - n:] if n else []:
            parts.append(_event_line(e, snapshot.time, width))
    return RenderGroup(*parts)
