"""`rpctl status`: the groups of this network namespace and their members (reads only);
with --prometheus, the groups of every host a Prometheus server scrapes."""

from __future__ import annotations

import json

from rpctl.controller.contract.errors import ExitStatus, UsageError

from .common import Environment, add_command, group_option, json_option, prometheus_options


def cmd_status(env: Environment, args) -> ExitStatus:
    if args.prometheus is not None:
        return _fleet_status(env, args)
    if args.match is not None or args.window is not None:
        raise UsageError("status: --match and --window need --prometheus URL")
    from rpctl.controller.read.views import read_views

    views = read_views(group=args.group)
    if args.json:
        from .json_docs import status_json

        env.out(json.dumps(status_json(views), indent=2))
        return ExitStatus.OK
    if not views:
        env.out("no group in this network namespace")
        return ExitStatus.OK
    from . import render

    console = env.console()
    width = console.width
    console.print(render.stacked(render.status_table(view, width) for view in views))
    return ExitStatus.OK


def _fleet_status(env: Environment, args) -> ExitStatus:
    from rpctl.controller.read.prometheus_source import DEFAULT_WINDOW, PrometheusApi, read_fleet

    if args.group is not None:
        raise UsageError('status: with --prometheus, select groups with --match \'{group="NAME"}\'')
    window = args.window or DEFAULT_WINDOW
    views = read_fleet(PrometheusApi(args.prometheus), args.match, window)
    if args.json:
        from .json_docs import fleet_json

        env.out(json.dumps(fleet_json(views, args.prometheus, window), indent=2))
        return ExitStatus.OK
    from . import render

    console = env.console()
    width = console.width
    console.print(render.stacked(render.fleet_table(view, window, width) for view in views))
    return ExitStatus.OK


def add_commands(sub) -> None:
    p = add_command(sub, "status", cmd_status,
                    ["rpctl status", "rpctl status --group web --json",
                     "rpctl status --prometheus http://prometheus:9090 --match '{group=\"web\"}' --window 5m"])
    json_option(p)
    group_option(p, help="show only this group (default: every group here)")
    prometheus_options(p, window=True)
