"""Plain-text pieces of group views: shares, modes, pins, counters, warnings.  Pure: no
I/O and no rich (render.py and dashboard_screen.py draw with them), so that
a `--json` command or the exporter does not import it.  How a state looks is states.py."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Optional

from rpctl.controller.read.views import GROUP_COUNTERS, Counter, GroupView, MemberState, MemberView
from rpctl.controller.store.options import HASH
from rpctl.controller.tables.pin_table import format_cpus

if TYPE_CHECKING:
    from rpctl.controller.store.stale_state import StaleFolder

# What a group read through Prometheus shows when its exporter is down.
UNREACHABLE = "its exporter is down or cannot read the pinned state: no figures"

# Group counters that only mean something in some modes: name -> the modes that show it.
_COUNTER_MODES = {"pin_fallbacks": ("cpu", "rss"), "pin_unassigned": ("cpu", "rss"), "rss_unhashed": ("rss",)}
# Group counters of the flow table: shown for groups that have one.
_FLOW_COUNTERS = {"flow_evictions"}
# Group counters that only QUIC groups show.
_QUIC_COUNTERS = {"quic_unknown_server_id"}
# ...and those only adaptive groups show.
_ADAPTIVE_COUNTERS = {"throttle_skips"}


def pid_text(m: MemberView) -> str:
    """The processes serving a member: its pid; a shared member's (a prefork server's
    children) "22535,22537" or "22535,22537+3", "-" when none is seen serving it."""
    if not m.shared:
        return str(m.pid)
    if not m.processes:
        return "-"
    head = ",".join(map(str, m.processes[:2]))
    return head + (f"+{len(m.processes) - 2}" if len(m.processes) > 2 else "")


def shown_counters(g: GroupView) -> list[Counter]:
    """The group counters a screen shows for g's mode and flow table (JSON and metrics
    always have every one)."""
    return [
        c for c in GROUP_COUNTERS
        if g.mode in _COUNTER_MODES.get(c.name, (g.mode,)) and (c.name not in _FLOW_COUNTERS or g.flow_table)
        and (c.name not in _QUIC_COUNTERS or g.quic_server_id_length)
        and (c.name not in _ADAPTIVE_COUNTERS or g.adaptive)
    ]


def flow_table_text(g: GroupView) -> Optional[str]:
    """"flows 312/65536": the flows in the flow table and its size; None without one."""
    t = g.flow_table
    return None if t is None else f"flows {t.entries}/{t.size}"


def counter_texts(g: GroupView, count: Callable[[int], str] = str) -> list[str]:
    """"slot misses 5", ...: each shown counter under its one name, as the status title and
    the dashboard write it."""
    return [f"{c.label} {count(getattr(g, c.name))}" for c in shown_counters(g)]


def rate_text(r: Optional[float]) -> str:
    """Connections (datagrams) per second, as short as it reads: 3.5, 120, 14k."""
    if r is None:
        return "-"
    if r < 10:
        return f"{r:.1f}"
    if r < 100_000:
        return f"{r:.0f}"
    return f"{r / 1000:.0f}k"


def rate_unit(g: GroupView) -> str:
    return "conn/s" if g.proto == "tcp" else "dgram/s"


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
    """"weighted", "cpu", "rss eth0"; ", datagram balance" after it when each datagram is
    placed at random by the weights; ", adaptive" when serve may throttle members, and
    whether no serve samples them."""
    text = f"rss {g.pin_dev}" if g.mode == "rss" else g.mode
    if g.balance != HASH:
        text += f", {g.balance} balance"
    if not g.adaptive:
        return text
    if g.adaptive_unsampled:
        ago = g.adaptive_sampled_ago
        since = "" if ago == float("inf") else f" for {ago:.0f} s"
        return f"{text}, adaptive (not sampled{since}: is rpctl serve running?)"
    return f"{text}, adaptive"


def throttle_lines(g: GroupView) -> list[str]:
    """"worker-2 throttled: queue 37, others <= 2", one per throttled member."""
    return [f"{m.name} throttled: {m.throttled}" for m in g.members if m.state == MemberState.THROTTLED]


def generation_lines(g: GroupView) -> list[str]:
    """One line per server generation (decision 0021): "generation 1: drained, 0.0% of new
    work (nginx-1, nginx-2): safe to stop"; none for a group without generations."""
    out = []
    for gen in g.generations:
        verdict = f", {gen.verdict}" if gen.verdict else ""
        safe = ": safe to stop" if gen.state == "drained" else ""
        out.append(f"generation {gen.number}: {gen.state}{verdict}, {pct(gen.share)} of new work "
                   f"({', '.join(gen.members)}){safe}")
    return out


def folder_text(folder: StaleFolder) -> str:
    """"netns4097 (groups web, api)": a stale state folder as cleanup and doctor name it."""
    return f"{folder.netns} ({'groups ' + ', '.join(folder.groups) if folder.groups else 'no group'})"


def unmanaged_warning(g: GroupView) -> Optional[str]:
    """The line status, the dashboard and doctor write about listeners of the group's
    endpoint that are not members; None when there is none (or they were not read)."""
    if not g.unmanaged:
        return None
    n = len(g.unmanaged)
    what = "connection" if g.proto == "tcp" else "datagram"
    if g.instance is not None:  # read through Prometheus: how many, not whose
        return (f"{n} unmanaged listener{'s' if n > 1 else ''} on {g.endpoint} at {g.instance} — "
                f"{'they get' if n > 1 else 'it gets'} no {what} while a member is live; adopt or stop "
                f"{'them' if n > 1 else 'it'}")
    holders = ", ".join(f"pid {u.pid} ({u.comm})" if u.pid is not None else f"cookie {u.cookie} (no visible process)"
                        for u in g.unmanaged)
    if n == 1:
        return (f"1 unmanaged listener on {g.endpoint}: {holders} — it gets no {what} while a member is live; "
                "adopt it or stop it")
    return (f"{n} unmanaged listeners on {g.endpoint}: {holders} — they get no {what} while a member is live; "
            "adopt them or stop them")
