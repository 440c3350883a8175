"""`rpctl dashboard`: a live view of the groups of this network namespace (reads only).

On a terminal it takes the screen and redraws every --interval seconds
until `q` or Ctrl-C; without one it prints one frame (or --frames N), which
is what scripts and CI logs want.  The loop is cli/live.py; what a frame
shows, cli/dashboard_screen.py.
"""

from __future__ import annotations

from rpctl.controller.errors import ExitStatus, InvalidInput

from .common import Environment, add_command, group_option
from .live import DEFAULT_INTERVAL, MAX_INTERVAL, MIN_INTERVAL


def cmd_dashboard(env: Environment, args) -> ExitStatus:
    from rpctl.controller import group

    from . import live
    from .dashboard_screen import History

    interval = args.interval
    if not MIN_INTERVAL <= interval <= MAX_INTERVAL:
        raise InvalidInput(
            f"dashboard: --interval {interval:g} is out of range {MIN_INTERVAL:g}..{MAX_INTERVAL:g}"
        )
    frames = args.frames
    if frames is not None and frames < 1:
        raise InvalidInput(f"dashboard: --frames {frames} must be at least 1")
    if args.group is not None:
        group.resolve_group(args.group)  # a typo is exit 3 now, not an empty screen
    console = env.console()
    history = History()
    if console.is_terminal:
        live.show_live(console, history, args.group, interval, frames)
    else:
        live.print_frames(console, history, args.group, interval, frames or 1)
    return ExitStatus.OK


def add_commands(sub) -> None:
    p = add_command(
        sub,
        "dashboard",
        cmd_dashboard,
        "live view of groups and members: state, weights, shares, rates, queues and recent events (q quits)",
        [
            "rpctl dashboard",
            "rpctl dashboard --group web --interval 1",
            "rpctl dashboard --frames 1 > snapshot.txt",
        ],
    )
    group_option(p, help="show only this group (default: every group here)")
    p.add_argument(
        "--interval",
        type=float,
        default=DEFAULT_INTERVAL,
        metavar="S",
        help=f"seconds between polls and redraws (default {DEFAULT_INTERVAL:g}, "
        f"range {MIN_INTERVAL:g}..{MAX_INTERVAL:g})",
    )
    p.add_argument(
        "--frames",
        type=int,
        metavar="N",
        help="stop after N frames (default: until q on a terminal, 1 without one)",
    )
