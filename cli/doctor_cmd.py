"""`rpctl doctor`: what this machine lacks for rpctl, and how to fix it."""

from __future__ import annotations

import json

from rpctl.controller.errors import ExitStatus

from .common import Environment, add_command, json_option


def cmd_doctor(env: Environment, args) -> ExitStatus:
    from rpctl.controller import probe

    checks = probe.run_checks()
    if args.json:
        from .json_docs import doctor_json

        env.out(json.dumps(doctor_json(checks), indent=2))
    else:
        from . import render

        env.console().print(render.doctor_table(checks))
    failed = [c for c in checks if not c.ok and not c.warning]
    return ExitStatus.UNSUPPORTED if failed else ExitStatus.OK


def add_commands(sub) -> None:
    p = add_command(
        sub,
        "doctor",
        cmd_doctor,
        "check kernel, privileges, bpffs, kernel headers and bcc, and say how to fix what is missing",
        ["rpctl doctor", "rpctl doctor --json"],
    )
    json_option(p)
