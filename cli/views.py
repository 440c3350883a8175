"""Group views -> plain text pieces and the JSON documents of `--json`.  Pure:
no I/O, and no rich (render.py draws the tables), so that a `--json` command
does not import it.

The JSON keys are a stable interface (snake_case, documented in README).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Optional

from rpctl.controller.pin_table import format_cpus
from rpctl.controller.probe import Check
from rpctl.controller.views import ACTIVE, DRAINED, DRAINING, GONE, GROUP_COUNTERS, Counter, GroupView, MemberView

# Member state -> the rich style it is shown in (a name, not a rich object).
STATE_STYLE = {ACTIVE: "green", DRAINING: "yellow", DRAINED: "cyan", GONE: "red"}

# Group counters that only mean something in some modes: name -> the modes that show it.
_COUNTER_MODES = {"pin_fallbacks": ("cpu", "rss"), "pin_unassigned": ("cpu", "rss"), "rss_unhashed": ("rss",)}


def shown_counters(g: GroupView) -> list[Counter]:
    """The group counters a screen shows for g's mode (JSON and metrics always have every one)."""
    return [c for c in GROUP_COUNTERS if g.mode in _COUNTER_MODES.get(c.name, (g.mode,))]


def counter_texts(g: GroupView, count: Callable[[int], str] = str) -> list[str]:
    """"slot misses 5", ...: each shown counter under its one name, as the status title and
    the dashboard write it."""
    return [f"{c.label} {count(getattr(g, c.name))}" for c in shown_counters(g)]


def pct(x: Optional[float]) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def opt(x: Optional[int]) -> str:
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
        "counters": g.counters,
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


def doctor_json(checks: Iterable[Check]) -> dict[str, Any]:
    return {
        "checks": [
            {"name": c.name, "ok": c.ok, "warning": c.warning, "detail": c.detail, "fix": c.fix} for c in checks
        ]
    }
