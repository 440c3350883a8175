"""`rpctl cleanup`: remove the state folders of network namespaces that no longer exist."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from rpctl.controller.contract.errors import ExitStatus

from .common import Environment, add_command, json_option
from .text import folder_text

if TYPE_CHECKING:
    from rpctl.controller.store.stale_state import StaleFolder


def cleanup_lines(folders: list[StaleFolder], dry_run: bool) -> list[str]:
    if not folders:
        return ["nothing to clean up: every state folder belongs to a network namespace that exists"]
    verb = "would remove" if dry_run else "removed"
    return [f"{verb} {f.path}: {folder_text(f)}" for f in folders]


def cmd_cleanup(env: Environment, args) -> ExitStatus:
    from rpctl.controller.store import stale_state

    folders = stale_state.remove_stale(dry_run=args.dry_run)
    if args.json:
        doc = {"dry_run": args.dry_run,
               "folders": [{"netns": f.netns, "path": f.path, "groups": list(f.groups)} for f in folders]}
        env.out(json.dumps(doc, indent=2))
    else:
        for line in cleanup_lines(folders, args.dry_run):
            env.out(line)
    return ExitStatus.OK


def add_commands(sub) -> None:
    p = add_command(
        sub,
        "cleanup",
        cmd_cleanup,
        ["rpctl cleanup --dry-run", "rpctl cleanup", "rpctl cleanup --json"],
        description=(
            "A namespace is alive while a process, a bind mount (ip netns) or an open file descriptor\n"
            "holds it; a folder whose group still has a socket is kept too.  When not every namespace\n"
            "can be seen, nothing is removed."
        ),
    )
    p.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    json_option(p, help="print JSON: {dry_run, folders: [{netns, path, groups}]}")
