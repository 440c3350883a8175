"""`rpctl status`: the groups of this network namespace and their members (reads only)."""

from __future__ import annotations

import json

from rpctl.controller.errors import ExitStatus

from .common import Environment, add_command, group_option, json_option


def cmd_status(env: Environment, args) -> ExitStatus:
    from rpctl.controller.views import read_views

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
    for view in views:
        console.print(render.status_table(view, console.width))
    return ExitStatus.OK


def add_commands(sub) -> None:
    p = add_command(sub, "status", cmd_status, "list groups and members",
                    ["rpctl status", "rpctl status --group web --json"])
    json_option(p)
    group_option(p, help="show only this group (default: every group here)")
