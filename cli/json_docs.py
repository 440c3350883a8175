"""Group views -> the JSON documents of `--json`.  Pure: no I/O and no rich.

The JSON keys are a stable interface (snake_case, documented in README):
counters are keyed by their one name (controller/read/views.py's tables).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

from rpctl.controller.read.views import GroupView, MemberView

if TYPE_CHECKING:
    from rpctl.controller.kernel.probe import Check
    from rpctl.controller.ops.reconcile import Plan


def member_json(m: MemberView) -> dict[str, Any]:
    return {
        "name": m.name,
        "index": m.index,
        "pid": m.pid,
        "fd": m.fd,
        "shared": m.shared,
        "processes": list(m.processes),
        "cookie": m.cookie,
        "state": m.state,
        "weight": m.weight,
        "target_share": round(m.target_share, 6),
        "observed_share": None if m.observed_share is None else round(m.observed_share, 6),
        "selected": m.selected,
        "fallback": m.fallback,
        "migrated": m.migrated,
        "pinned": m.pinned,
        "flow_datagrams": m.flow_datagrams,
        "flows_created": m.flows_created,
        "flows_reassigned": m.flows_reassigned,
        "flows": m.flows,
        "quic_routed": m.quic_routed,
        "quic_server_id": m.quic_server_id,
        "pins": list(m.pins),
        "selected_since_change": m.since_publish,
        "queue": m.queue,
        "throttled": m.throttled,
        "server_generation": m.generation or None,
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
        "adaptive": g.adaptive,
        # true while rpctl serve samples an adaptive group's queues; null when not adaptive
        "adaptive_sampled": (not g.adaptive_unsampled) if g.adaptive else None,
        "quic_server_id_length": g.quic_server_id_length or None,
        "balance": g.balance,
        "generation": g.gen,
        "published_ns": g.published_ns,
        "counters": g.counters,
        "flow_table": None if g.flow_table is None else {
            "size": g.flow_table.size,
            "entries": g.flow_table.entries,
            "idle_timeout": g.flow_idle_timeout,
        },
        "members": [member_json(m) for m in g.members],
        # Server generations (decision 0021), oldest first; [] for a group without them.
        "server_generations": [gen.as_json for gen in g.generations],
        "unmanaged": None if g.unmanaged is None else [
            {"pid": u.pid, "comm": u.comm, "cookie": u.cookie, "inode": u.inode} for u in g.unmanaged
        ],
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


# The keys of `rpctl status --prometheus --json`: what Prometheus knows of a group and a member.
FLEET_GROUP_KEYS = ("name", "protocol", "address", "port", "program_id", "mode", "migration", "adaptive",
                    "balance", "counters", "server_generations")
FLEET_KEYS = ("name", "state", "weight", "target_share", "observed_share", "selected", "fallback", "migrated",
              "pinned", "queue", "throttled", "server_generation")


def fleet_json(groups: Iterable[GroupView], source: str, window: str) -> dict[str, Any]:
    """Groups read through Prometheus: each with its `instance`; each member's `rate` and
    `observed_share` are over `window` (Prometheus' rate())."""
    return {
        "prometheus": source,
        "window": window,
        "groups": [
            {
                "instance": g.instance,
                "exporter_up": not g.unreachable,
                **{k: v for k, v in group_json(g).items() if k in FLEET_GROUP_KEYS},
                "unmanaged_listeners": None if g.unmanaged is None else len(g.unmanaged),
                "members": [
                    {**{k: v for k, v in member_json(m).items() if k in FLEET_KEYS},
                     "rate": None if m.rate is None else round(m.rate, 3)}
                    for m in g.members
                ],
            }
            for g in groups
        ],
    }


def plan_json(p: Plan) -> dict[str, Any]:
    """One group's plan, as `apply --json` prints it."""
    return {
        "group": p.group,
        "endpoint": p.key.text,
        "changed": not p.empty,
        "created": p.create,
        "kept_by_serve": p.kept_by_serve,
        "added": [{"name": a.name, "pid": a.pid, "fd": a.fd, "comm": a.comm, "cookie": a.cookie, "weight": a.weight,
                   "draining": a.draining} for a in p.adds],
        "removed": [{"name": r.name, "reason": r.reason} for r in p.removes],
        "refreshed": [{"name": r.name, "pid": r.pid, "fd": r.fd, "old_pid": r.old_pid, "shared": r.shared}
                      for r in p.refreshes],
        "policies": [{"name": r.name, "weight": r.weight, "draining": r.draining, "old_weight": r.old_weight,
                      "old_draining": r.old_draining} for r in p.reweighs],
        "pin": p.pin.text if p.pin is not None else None,
        "unmanaged": [{"pid": u.pid, "comm": u.comm, "cookie": u.cookie, "inode": u.inode, "reason": u.reason}
                      for u in p.unmanaged],
        "unknown_names": list(p.unknown_names),
        "lines": p.lines(),
    }


def doctor_json(checks: Iterable[Check]) -> dict[str, Any]:
    return {
        "checks": [
            {"name": c.name, "ok": c.ok, "warning": c.warning, "detail": c.detail, "fix": c.fix} for c in checks
        ]
    }
