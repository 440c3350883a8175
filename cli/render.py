"""Group views -> rich tables and JSON documents.  Pure: no I/O here.

The JSON keys are a stable interface (snake_case, documented in README).
"""

from __future__ import annotations

from typing import Any, Iterable, Optional

from rich.table import Table
from rich.text import Text

from rpctl.controller.group import GroupView, MemberView
from rpctl.controller.pinning import format_cpus
from rpctl.controller.probe import Check

STATE_STYLE = {"active": "green", "draining": "yellow", "drained": "cyan", "gone": "red"}


def pct(x: Optional[float]) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _opt(x: Optional[int]) -> str:
    return "-" if x is None else str(x)


def pin_text(g: GroupView, m: MemberView) -> str:
    """What a member is pinned to: "cpu 0-1", "queue 0,2", or "-"."""
    if g.mode not in ("cpu", "rss") or not m.pins:
        return "-"
    return f"{'cpu' if g.mode == 'cpu' else 'queue'} {format_cpus(m.pins)}"


def mode_text(g: GroupView) -> str:
    return f"rss {g.pin_dev}" if g.mode == "rss" else g.mode


def member_json(m: MemberView) -> dict[str, Any]:
    return {
        "name": m.name,
        "index": m.index,
        "pid": m.pid,
        "fd": m.fd,
        "cookie": m.cookie,
        "state": m.state,
        "weight": m.weight,
        "target_share": round(m.target_share, 6),
        "observed_share": None if m.observed_share is None else round(m.observed_share, 6),
        "selected": m.selected,
        "fallback": m.fallback,
        "migrated": m.migrated,
        "pinned": m.pinned,
        "pins": list(m.pins),
        "selected_since_change": m.since_publish,
        "queue": m.queue,
    }


def group_json(g: GroupView) -> dict[str, Any]:
    return {
        "name": g.name,
        "protocol": g.proto,
        "address": g.addr,
        "port": g.port,
        "program_id": g.prog_id,
        "mode": g.mode,
        "pin_device": g.pin_dev or None,
        "migration": g.migration,
        "generation": g.gen,
        "published_ns": g.published_ns,
        "counters": {
            "slot_misses": g.slot_misses,
            "no_live_member": g.no_live,
            "pin_fallbacks": g.pin_fallbacks,
            "pin_unassigned": g.pin_unassigned,
            "rss_unhashed": g.rss_unhashed,
        },
        "members": [member_json(m) for m in g.members],
    }


def status_json(groups: Iterable[GroupView]) -> dict[str, Any]:
    return {"groups": [group_json(g) for g in groups]}


# The member keys `rpctl weights --json` shows: a subset of status's.
WEIGHTS_KEYS = ("name", "state", "weight", "target_share", "observed_share", "selected_since_change")


def weights_json(g: GroupView) -> dict[str, Any]:
    return {
        "group": g.name,
        "members": [{k: v for k, v in member_json(m).items() if k in WEIGHTS_KEYS} for m in g.members],
    }


def state_text(m: MemberView) -> Text:
    return Text(m.state, style=STATE_STYLE.get(m.state, ""))


def group_title(g: GroupView) -> str:
    pinned = ""
    if g.mode != "weighted":
        pinned = f"  pin fallbacks {g.pin_fallbacks}  unpinned {g.pin_unassigned}"
        if g.mode == "rss":
            pinned += f"  unhashed {g.rss_unhashed}"
    return (
        f"group {g.name}  {g.endpoint}  prog {g.prog_id}  mode {mode_text(g)}  "
        f"fallbacks {g.slot_misses}  no-live {g.no_live}{pinned}"
    )


def status_table(g: GroupView, width: int = 80) -> Table:
    """Fits 80 columns; the socket cookie joins from 100 columns on (JSON always has it).
    In a pinned mode, what each member is pinned to and how often that chose it; below
    100 columns these take the place of idx and fallback (JSON always has them)."""
    pinned = g.mode != "weighted"
    wide = width >= 100
    t = Table(title=group_title(g), title_justify="left")
    right = {"justify": "right"}
    columns = [
        ("member", {}, lambda m: m.name),
        ("pid", right, lambda m: str(m.pid)),
        ("idx", right, lambda m: str(m.index), wide or not pinned),
        ("cookie", right, lambda m: str(m.cookie), wide),
        ("state", {}, state_text),
        ("weight", right, lambda m: str(m.weight)),
        ("selected", right, lambda m: str(m.selected)),
        ("fallback", right, lambda m: str(m.fallback), wide or not pinned),
        ("queue", right, lambda m: _opt(m.queue)),
        ("pin", {}, lambda m: pin_text(g, m), pinned),
        ("pinned", right, lambda m: str(m.pinned), pinned),
    ]
    shown = [(col, kw, cell) for col, kw, cell, *keep in columns if not keep or keep[0]]
    for col, kw, _ in shown:
        t.add_column(col, **kw)
    for m in g.members:
        t.add_row(*[cell(m) for _, _, cell in shown])
    return t


def weights_table(g: GroupView) -> Table:
    t = Table(title=f"group {g.name}  {g.endpoint}", title_justify="left")
    t.add_column("member")
    t.add_column("state")
    t.add_column("weight", justify="right")
    t.add_column("target", justify="right")
    t.add_column("observed", justify="right")
    t.add_column("since change", justify="right")
    for m in g.members:
        t.add_row(
            m.name, state_text(m), str(m.weight), pct(m.target_share), pct(m.observed_share), str(m.since_publish)
        )
    return t


def doctor_table(checks: Iterable[Check]) -> Table:
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


def doctor_json(checks: Iterable[Check]) -> dict[str, Any]:
    return {
        "checks": [
            {"name": c.name, "ok": c.ok, "warning": c.warning, "detail": c.detail, "fix": c.fix} for c in checks
        ]
    }
