"""Group views -> Prometheus metric families.  Pure: no I/O here.

What `rpctl metrics` serves, built from the same GroupView snapshots that
status and the dashboard show, so that the three never disagree.  Names
follow the Prometheus conventions: the `rpctl_` prefix, `_total` on
counters (prometheus_client adds it to a counter family's samples), one
unit per name.  That is why the queue is two names: a TCP member's queue is
connections waiting in its accept queue, a UDP member's is bytes waiting in
its receive queue.

The counters are the program's per-CPU counters summed over CPUs: they
restart at zero when a name is registered again (a new member), which
Prometheus' rate() treats as a counter reset.
"""

from __future__ import annotations

from typing import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from rpctl.controller.read.views import GROUP_COUNTERS, MEMBER_COUNTERS, STATES, GroupView
from rpctl.controller.tables.server_generations import State

GEN_STATES = tuple(str(s) for s in State)
GROUP = ["group"]
MEMBER = ["group", "member"]


def families(views: Iterable[GroupView], up: bool = True) -> list[Metric]:
    """The metric families of one scrape.

    `up` says whether the pinned state could be read at all; when it could
    not, `views` is empty and only rpctl_up (0) has a sample.  Every family
    is listed even without samples, so that a scrape of an empty namespace
    still documents every name.
    """
    up_family = GaugeMetricFamily("rpctl_up", "1 if rpctl read the pinned state of this scrape, 0 if it could not")
    up_family.add_metric([], 1 if up else 0)

    info = InfoMetricFamily(
        "rpctl_group", "A group: its endpoint, protocol, steering mode, program id, listener migration, "
        "adaptive steering and balance (hash or datagram)",
        labels=GROUP,
    )
    # One family per counter of the one table, named after it.
    group_counters = [
        (CounterMetricFamily(f"rpctl_group_{c.name}", c.help, labels=GROUP), c.name) for c in GROUP_COUNTERS
    ]
    member_counters = [
        (CounterMetricFamily(f"rpctl_member_{c.name}", c.help, labels=MEMBER), c.name) for c in MEMBER_COUNTERS
    ]
    weight = GaugeMetricFamily("rpctl_member_weight", "Weight of the member in the live table", labels=MEMBER)
    state = GaugeMetricFamily(
        "rpctl_member_state", f"1 for the member's state, 0 for the others ({', '.join(STATES)})",
        labels=MEMBER + ["state"],
    )
    queued_connections = GaugeMetricFamily(
        "rpctl_member_queued_connections", "Connections waiting in a TCP member's accept queue", labels=MEMBER
    )
    queued_bytes = GaugeMetricFamily(
        "rpctl_member_queued_bytes", "Bytes waiting in a UDP member's receive queue", labels=MEMBER
    )
    throttled = GaugeMetricFamily(
        "rpctl_member_throttled", "1 while an adaptive group's serve throttles the member (its queue built alone)",
        labels=MEMBER,
    )
    # UDP groups with flow affinity: what the flow table holds (walked at each scrape).
    member_flows = GaugeMetricFamily(
        "rpctl_member_flows", "Live UDP flows the flow table still sends to the member", labels=MEMBER
    )
    flow_entries = GaugeMetricFamily(
        "rpctl_group_flow_table_entries", "Entries in the group's UDP flow table, live or idle", labels=GROUP
    )
    flow_size = GaugeMetricFamily(
        "rpctl_group_flow_table_size", "Entries the group's UDP flow table can hold", labels=GROUP
    )
    # Server generations (decision 0021): groups whose file says `generations`.
    member_generation = GaugeMetricFamily(
        "rpctl_member_server_generation", "The server generation of the member (1, 2, ... per group)", labels=MEMBER
    )
    generation_share = GaugeMetricFamily(
        "rpctl_generation_share", "Share of new work the server generation's members take (0..1)",
        labels=GROUP + ["generation"],
    )
    generation_state = GaugeMetricFamily(
        "rpctl_generation_state", f"1 for the server generation's state, 0 for the others ({', '.join(GEN_STATES)})",
        labels=GROUP + ["generation", "state"],
    )
    unmanaged = GaugeMetricFamily(
        "rpctl_group_unmanaged_listeners",
        "Listeners of the group's endpoint that are not members (they get nothing while a member is live)",
        labels=GROUP,
    )

    for g in views:
        info.add_metric(
            [g.name],
            {
                "endpoint": g.endpoint,
                "protocol": g.proto,
                "mode": g.mode,
                "program_id": str(g.prog_id),
                "migration": "true" if g.migration else "false",
                "adaptive": "true" if g.adaptive else "false",
                "balance": g.balance,
            },
        )
        for family, name in group_counters:
            family.add_metric([g.name], getattr(g, name))
        if g.flow_table is not None:
            flow_entries.add_metric([g.name], g.flow_table.entries)
            flow_size.add_metric([g.name], g.flow_table.size)
        if g.unmanaged is not None:  # None: sock_diag was not read
            unmanaged.add_metric([g.name], len(g.unmanaged))
        for gen in g.generations:
            generation_share.add_metric([g.name, str(gen.number)], gen.share)
            for s in GEN_STATES:
                generation_state.add_metric([g.name, str(gen.number), s], 1 if s == gen.state else 0)
        queued = queued_connections if g.proto == "tcp" else queued_bytes
        for m in g.members:
            labels = [g.name, m.name]
            for family, name in member_counters:
                family.add_metric(labels, getattr(m, name))
            weight.add_metric(labels, m.weight)
            if m.generation:
                member_generation.add_metric(labels, m.generation)
            if g.adaptive:
                throttled.add_metric(labels, 0 if m.throttled is None else 1)
            current = m.state
            for s in STATES:
                state.add_metric(labels + [s], 1 if s == current else 0)
            if m.queue is not None:  # None: sock_diag did not find the socket (it closed)
                queued.add_metric(labels, m.queue)
            if m.flows is not None:
                member_flows.add_metric(labels, m.flows)

    return [up_family, info, *(family for family, _ in group_counters), *(family for family, _ in member_counters),
            weight, state, throttled, queued_connections, queued_bytes, unmanaged, member_flows, flow_entries, flow_size,
            member_generation, generation_share, generation_state]
