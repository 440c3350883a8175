"""`rpctl doctor`: what this machine lacks for rpctl, and how to fix it; what in the
pinned state needs an operator (listeners no group steers to, stale state folders)."""

from __future__ import annotations

import json

from rpctl.controller.contract.errors import ExitStatus, RpctlError
from rpctl.controller.kernel.probe import Check

from .common import Environment, add_command, json_option


def state_checks(machine: list[Check]) -> list[Check]:
    """Warnings about the pinned state: each group's unmanaged listeners, and state
    folders of namespaces that no longer exist.  Read only when bpffs is there."""
    if not any(c.name == "bpffs" and c.ok for c in machine):
        return []
    from rpctl.controller.read.views import read_views
    from rpctl.controller.store import stale_state

    from .text import folder_text, unmanaged_warning
    from .wording import error_line

    checks = []
    try:
        for g in read_views():
            warning = unmanaged_warning(g)
            checks.append(Check(f"group {g.name}", warning is None,
                                warning or f"every listener of {g.endpoint} is a member", warning=True))
    except (RpctlError, OSError) as e:
        checks.append(Check("groups", False, f"cannot read this namespace's groups: {error_line(e)[0]}",
                            warning=True))
    try:
        stale = stale_state.stale_folders()
        folders = f"{len(stale)} folder{'s' if len(stale) != 1 else ''}"
        detail = (f"{folders} of network namespaces that no longer exist: "
                  + "; ".join(folder_text(f) for f in stale)) if stale else "none of a namespace that is gone"
        checks.append(Check("state folders", not stale, detail, fix="rpctl cleanup", warning=True))
    except (RpctlError, OSError) as e:
        checks.append(Check("state folders", False, f"cannot tell which are stale: {error_line(e)[0]}",
                            warning=True))
    return checks


def cmd_doctor(env: Environment, args) -> ExitStatus:
    from rpctl.controller.kernel import probe

    checks = probe.run_checks()
    checks += state_checks(checks)
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
        ["rpctl doctor", "rpctl doctor --json"],
    )
    json_option(p)
