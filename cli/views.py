"""Group views -> plain text pieces and the JSON documents of `--json`.  Pure:
no I/O, and no rich (render.py draws the tables), so that a `--json` command
does not import it.

The JSON keys are a stable interface (snake_case, documented in README).
"""

from __future__ import annotations

from typing import Any, Iterable, Optional

from rpctl.controller.group import GroupView, MemberView
from rpctl.controller.pin_table import format_cpus
from rpctl.controller.probe import Check

# Member state -> the rich style it is shown in (a name, not a rich object).
STATE_STYLE = {"active": "green", "draining": "yellow", "drained": "cyan", "gone": "red"}

# The group's counters: (name in `status --json` and in the metrics, GroupView attribute, help).
GROUP_COUNTERS = (
    ("slot_misses", "slot_misses", "Selections whose slot's socket was gone: fell back to the live list"),
    ("no_live_member", "no_live", "Selections with no live member: the kernel chose the socket"),
    ("pin_fallbacks", "pin_fallbacks", "Pinned modes: the member of the CPU or queue was draining or gone"),
    ("pin_unassigned", "pin_unassigned", "Pinned modes: no member pinned to the CPU or queue"),
    ("rss_unhashed", "rss_unhashed", "RSS mode: packets whose NIC hash could not be recomputed"),
)


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
        "counters": {name: getattr(g, attr) for name, attr, _ in GROUP_COUNTERS},
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
