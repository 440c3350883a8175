"""`rpctl dashboard`: a live view of the groups of this network namespace (reads only).

On a terminal it takes the screen and redraws every --interval seconds
until `q` or Ctrl-C; without one it prints one frame (or --frames N), which
is what scripts and CI logs want.  The loop is cli/live.py; what a frame
shows, cli/dashboard_screen.py.
"""

from __future__ import annotations

from rpctl.controller.contract.errors import ExitStatus, InvalidInput, UsageError

from .common import Environment, add_command, group_option, prometheus_options
from .live import DEFAULT_INTERVAL, MAX_INTERVAL, MIN_INTERVAL

# Through Prometheus a poll is eight queries of the server, whose figures change once a scrape:
# polling more often than this only loads it.
FLEET_MIN_INTERVAL = 1.0


def cmd_dashboard(env: Environment, args) -> ExitStatus:
    from rpctl.controller.store import group

    from . import live
    from .dashboard_history import History

    interval = args.interval
    if not MIN_INTERVAL <= interval <= MAX_INTERVAL:
        raise InvalidInput(
            f"dashboard: --interval {interval:g} is out of range {MIN_INTERVAL:g}..{MAX_INTERVAL:g}"
        )
    frames = args.frames
    if frames is not None and frames < 1:
        raise InvalidInput(f"dashboard: --frames {frames} must be at least 1")
    if args.prometheus is not None:
        read = _fleet_read(args)
        interval = max(interval, FLEET_MIN_INTERVAL)
    else:
        if args.match is not None or args.window is not None:
            raise UsageError("dashboard: --match and --window need --prometheus URL")
        if args.group is not None:
            group.resolve_group(args.group)  # a typo is exit 3 now, not an empty screen
        read = live.local_read(args.group)
    console = env.console()
    history = History()
    if console.is_terminal:
        live.show_live(console, history, read, interval, frames)
    else:
        live.print_frames(console, history, read, interval, frames or 1)
    return ExitStatus.OK


def _fleet_read(args):
    """The read of every poll through Prometheus; the first read is done here, so that a wrong
    URL or selector is one line and an exit code, not an empty screen."""
    from rpctl.controller.read.prometheus_source import DEFAULT_WINDOW, PrometheusApi, read_fleet

    from . import live

    if args.group is not None:
        raise UsageError('dashboard: with --prometheus, select groups with --match \'{group="NAME"}\'')
    api = PrometheusApi(args.prometheus)
    window = args.window or DEFAULT_WINDOW
    read_fleet(api, args.match, window)
    return live.fleet_read(lambda: read_fleet(api, args.match, window))


def add_commands(sub) -> None:
    p = add_command(
        sub,
        "dashboard",
        cmd_dashboard,
        [
            "rpctl dashboard",
            "rpctl dashboard --group web --interval 1",
            "rpctl dashboard --frames 1 > snapshot.txt",
            "rpctl dashboard --prometheus http://prometheus:9090 --match '{job=\"rpctl\"}'   # every host",
        ],
    )
    group_option(p, help="show only this group (default: every group here)")
    prometheus_options(p, window=True)
    p.add_argument(
        "--interval",
        type=float,
        default=DEFAULT_INTERVAL,
        metavar="S",
        help=f"seconds between polls and redraws (default {DEFAULT_INTERVAL:g}, "
        f"range {MIN_INTERVAL:g}..{MAX_INTERVAL:g}; at least {FLEET_MIN_INTERVAL:g} with --prometheus)",
    )
    p.add_argument(
        "--frames",
        type=int,
        metavar="N",
        help="stop after N frames (default: until q on a terminal, 1 without one)",
    )
