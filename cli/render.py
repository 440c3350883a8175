"""Group views -> rich tables.  Pure: no I/O here.

The plain-text pieces and the JSON documents are in views.py, which does
not import rich: `--json` never pays for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

from rich.console import Group as RenderGroup
from rich.text import Text
from rpctl.controller.read.views import GroupView, MemberState, MemberView

from .layout import table_lines
from .states import STATE_STYLE
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
    throttle_lines,
    unmanaged_warning,
)

if TYPE_CHECKING:
    from rich.table import Table
    from rpctl.controller.kernel.probe import Check


def state_text(m: MemberView) -> Text:
    return Text(m.state, style=STATE_STYLE[m.state])


def group_title(g: GroupView) -> str:
    flows = flow_table_text(g)
    return "  ".join([f"group {g.name}", g.endpoint, f"prog {g.prog_id}", f"mode {mode_text(g)}", *counter_texts(g),
                      *([flows] if flows else [])])


def stacked(tables: Iterable[RenderGroup]) -> RenderGroup:
    """Tables one under another, for one print: printing 256 groups' tables at once takes
    two thirds of the time of 256 prints, and reads the same."""
    return RenderGroup(*tables)


def _titled(title: str, lines: list[Text]) -> RenderGroup:
    return RenderGroup(Text(title, style="bold"), *lines)


def status_table(g: GroupView, width: int = 80) -> RenderGroup:
    """Fits 80 columns; the socket cookie joins from 100 columns on (JSON always has it).
    In a pinned mode, what each member is pinned to and how often that chose it; below
    100 columns these take the place of idx and fallback (JSON always has them).  In a
    QUIC group, each member's server id and the packets it got by it, in their place too."""
    pinned = g.mode != "weighted"
    quic = bool(g.quic_server_id_length)
    wide = width >= 100
    columns = [
        ("member", False, lambda m: m.name),
        ("pid", True, pid_text),
        ("idx", True, lambda m: str(m.index), wide or not (pinned or quic)),
        ("cookie", True, lambda m: str(m.cookie), wide),
        ("state", False, state_text),
        ("weight", True, lambda m: str(m.weight)),
        ("selected", True, lambda m: str(m.selected)),
        ("fallback", True, lambda m: str(m.fallback), wide or not (pinned or quic)),
        ("queue", True, lambda m: opt(m.queue)),
        # UDP groups with flow affinity: the live flows that still go to each member.
        ("flows", True, lambda m: opt(m.flows), g.flow_table is not None),
        ("pin", False, lambda m: pin_text(g, m), pinned),
        ("pinned", True, lambda m: str(m.pinned), pinned),
        ("quic id", False, lambda m: m.quic_server_id or "-", quic),
        ("quic routed", True, lambda m: str(m.quic_routed), quic),
        # Groups with server generations (generations in the file): each member's.
        ("gen", True, lambda m: str(m.generation or "-"), bool(g.generations)),
    ]
    shown = [(col, right, cell) for col, right, cell, *keep in columns if not keep or keep[0]]
    rows = [[cell(m) for _, _, cell in shown] for m in g.members]
    lines = table_lines([c for c, _, _ in shown], rows, [r for _, r, _ in shown], width)
    lines += [Text(line, style=STATE_STYLE[MemberState.THROTTLED]) for line in throttle_lines(g)]
    lines += [Text(line) for line in generation_lines(g)]
    warning = unmanaged_warning(g)
    if warning:
        lines.append(Text(warning, style="yellow"))
    return _titled(group_title(g), lines)


def weights_table(g: GroupView, width: int = 80) -> RenderGroup:
    rows = [
        [m.name, state_text(m), str(m.weight), pct(m.target_share), pct(m.observed_share), str(m.since_publish)]
        for m in g.members
    ]
    lines = table_lines(["member", "state", "weight", "target", "observed", "since change"], rows,
                        [False, False, True, True, True, True], width)
    return _titled(f"group {g.name}  {g.endpoint}", lines)


def fleet_table(g: GroupView, window: str, width: int = 80) -> RenderGroup:
    """A group read through Prometheus: its instance in the title; observed share and rate over `window`;
    server generations as status shows them."""
    gens = bool(g.generations)
    rows = [
        [m.name, state_text(m), str(m.weight), pct(m.target_share), pct(m.observed_share), rate_text(m.rate),
         opt(m.queue), *([str(m.generation or "-")] if gens else [])]
        for m in g.members
    ]
    lines = table_lines(["member", "state", "weight", "target", f"observed {window}", rate_unit(g), "queue",
                         *(["gen"] if gens else [])],
                        rows, [False, False, True, True, True, True, True, True], width)
    lines += [Text(line) for line in generation_lines(g)]
    warning = unmanaged_warning(g)
    if warning:
        lines.append(Text(warning, style="yellow"))
    if g.unreachable:
        lines = [Text(UNREACHABLE, style="bold red")]
    return _titled(f"{g.instance}  {group_title(g)}", lines)


def doctor_table(checks: Iterable[Check]) -> Table:
    from rich.table import Table  # doctor's alone: the member tables are lines (layout.py)

    t = Table(title="rpctl doctor", title_justify="left")
    t.add_column("check")
    t.add_column("result")
    t.add_column("detail")
    for c in checks:
        if c.ok:
            result = Text("ok", style="green")
        elif c.warning:
            result = Text("warn", style="yellow")
        else:
            result = Text("FAIL", style="bold red")
        detail = c.detail if c.ok or not c.fix else f"{c.detail} -> fix: {c.fix}"
        t.add_row(c.name, result, detail)
    return t
