"""`rpctl metrics`: serve the groups' counters and states to Prometheus.

Like the dashboard it only reads: every scrape opens the pinned maps, reads
them (and the queue depths sock_diag reports) and closes them again.  It
takes no lock, so it runs beside any other rpctl command, a writer stuck
holding a group's lock does not stall a scrape, and the program never waits
for it: steering does not involve this process at all.

The exporter itself (cli/exporter.py) is shared with `rpctl serve --metrics`.
"""

from __future__ import annotations

import signal

from rpctl.controller.contract.errors import ExitStatus

from .common import Environment, add_command, group_option
from .exporter import GroupCollector, start_exporter

DESCRIPTION = """\
Serve the groups of this network namespace to Prometheus (text format, any
path, e.g. /metrics) until Ctrl-C or SIGTERM.  Every scrape reads the
pinned state afresh and takes no lock: it runs beside any other rpctl
command and never slows steering.  It answers GET and HEAD alone (405 to
other methods); a client has 5 s for its request's head, and no slow or
silent client holds up another's scrape.  No authentication: bind to
loopback or a management address.

metrics (labels group, member; counters restart when a member is registered again):
  rpctl_member_selected_total         steered through the member's slots
  rpctl_member_fallback_total         its slot's socket was gone: re-hashed onto it by weight
  rpctl_member_migrated_total         queued connections of a closing listener placed on it
  rpctl_member_pinned_total           given as the member of its CPU or queue (pin cpu, pin rss)
  rpctl_member_quic_routed_total      QUIC packets given to it by the server id of their connection id
  rpctl_member_weight                 weight in the live table
  rpctl_member_state{state=...}       1 for its state (active, throttled, draining, drained, gone), 0 for the others
  rpctl_member_throttled              adaptive groups: 1 while serve throttles it (its queue built alone)
  rpctl_member_queued_connections     TCP: connections in its accept queue
  rpctl_member_queued_bytes           UDP: bytes in its receive queue
  rpctl_member_flow_datagrams_total   UDP: datagrams sent to it by their flow in the flow table
  rpctl_member_flows_created_total    UDP: new (or idle) flows placed on it
  rpctl_member_flows_reassigned_total UDP: flows placed on it because their member was gone
  rpctl_member_flows                  UDP: live flows the flow table still sends to it
  rpctl_group_info{endpoint,protocol,mode,program_id,migration,adaptive,balance}   1 per group
  rpctl_group_slot_misses_total       slot's socket gone: re-hashed into the weighted table
  rpctl_group_no_live_member_total    no live member: the kernel chose
  rpctl_group_pin_fallbacks_total     pinned member draining or gone: the weighted table chose
  rpctl_group_pin_unassigned_total    no member pinned to the CPU or queue: the weighted table chose
  rpctl_group_rss_unhashed_total      RSS mode, NIC hash not recomputed: the weighted table chose
  rpctl_group_throttle_skips_total    adaptive: slot's member throttled, given to another member
  rpctl_group_flow_evictions_total    UDP: live flows forgotten to make room in a full flow table
  rpctl_group_flow_table_entries      UDP: entries in the flow table (its size: rpctl_group_flow_table_size)
  rpctl_group_flow_table_size         UDP: entries the flow table can hold
  rpctl_group_quic_unknown_server_id_total   QUIC server id of no live member: the weights chose
  rpctl_group_unmanaged_listeners     listeners of the endpoint that are not members (get nothing)
  rpctl_member_server_generation      groups with generations: its server generation (1, 2, ...)
  rpctl_generation_share{generation}  groups with generations: the generation's share of new work
  rpctl_generation_state{generation,state}  1 for its state (serving, canary, draining, drained)
  rpctl_up                            0 when a scrape could not read the pinned state
  process_*                           the exporter's own CPU, memory and file descriptors"""


def cmd_metrics(env: Environment, args) -> ExitStatus:
    from rpctl.controller.kernel.process import stop_signals
    from rpctl.controller.kernel.sockets import hostport_text, parse_listen
    from rpctl.controller.store import group as groups

    host, port = parse_listen(args.listen, "metrics: --listen")
    if args.group is not None:
        groups.resolve_group(args.group)  # a typo is exit 3 now, not an exporter that serves nothing
    collector = GroupCollector(args.group, log=lambda message: env.err(f"rpctl metrics: {message}"))
    collector.read()  # missing privileges or damaged state: say so and exit, before listening

    # The stop signals (Ctrl-C, `kill`, a closed terminal; not one nohup ignores) are blocked
    # before the server's thread starts, so that it and the threads of its requests inherit
    # the mask: a stop signal reaches sigwait() below and interrupts nothing half-way.
    stops = stop_signals()
    saved = signal.pthread_sigmask(signal.SIG_BLOCK, stops)
    try:
        server, thread = start_exporter(host, port, collector)
        try:
            bound = server.server_address[1]  # the port the kernel chose for port 0
            what = f"group {args.group}" if args.group else "every group of this network namespace"
            env.err(f"rpctl metrics: serving {what} on http://{hostport_text(host, bound)}/metrics "
                    "(Ctrl-C or SIGTERM stops)")
            signum = signal.sigwait(stops)
        finally:
            server.shutdown()
            server.server_close()
            thread.join(5)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, saved)
    env.err(f"rpctl metrics: stopped ({signal.Signals(signum).name})")
    return ExitStatus.OK


def add_commands(sub) -> None:
    p = add_command(
        sub,
        "metrics",
        cmd_metrics,
        [
            "rpctl metrics --listen 127.0.0.1:9464",
            "rpctl metrics --listen '[::1]:9464' --group web",
            "rpctl metrics --listen 0.0.0.0:9464          # every IPv4 address of this host",
        ],
        description=DESCRIPTION,
    )
    p.add_argument("--listen", required=True, metavar="HOST:PORT",
                   help="literal address and port to serve on, [V6]:PORT for IPv6 (port 0: any free port)")
    group_option(p, help="serve only this group (default: every group here)")
