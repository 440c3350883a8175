"""`rpctl apply`: make this namespace's groups what rpctl.toml says, each group in one publish."""

from __future__ import annotations

import json

from rpctl.controller.contract.errors import ExitStatus, PermissionDenied, RpctlError, Unsupported

from .common import Environment, add_command, config_option, json_option
from .wording import error_line


def cmd_apply(env: Environment, args) -> ExitStatus:
    from rpctl.controller.ops import config, reconcile
    from rpctl.controller.ops.watch import Look
    from rpctl.controller.store.group import unload
    from rpctl.controller.store.state import Layout

    from .json_docs import plan_json

    # The whole file is checked before any group is touched.
    cfg = config.load(args.config)
    plans, failed = [], []
    status = ExitStatus.OK
    # One discover of each protocol's listeners for every group of the file, not
    # one (and one walk of /proc) per group: 256 groups in seconds, not tens.
    look = Look()
    for spec in cfg.groups:
        try:
            p = reconcile.reconcile(spec, dry_run=args.dry_run, look=look)
        except (PermissionDenied, Unsupported):
            raise  # the same for every group: one line, not one per group
        except RpctlError as e:
            # One group's trouble (its options differ, a listener vanished mid-way) leaves
            # that group as it was; the others are still made what the file says.
            text, code = error_line(e)
            if not text.startswith(f"group {spec.name}"):
                text = f"group {spec.name}: {text}"
            env.err(f"rpctl: {text}")
            failed.append({"group": spec.name, "error": text})
            status = status if status != ExitStatus.OK else code
            continue
        plans.append(p)
        if not args.json:
            for line in p.lines():
                env.out(line)
    named = {spec.name for spec in cfg.groups}
    others = [name for name in Layout().groups() if name not in named] if (args.prune or not args.json) else []
    pruned = []
    for name in others:
        if not args.prune:
            env.out(f"group {name}: not in {cfg.path}, left alone (--prune unloads it)")
            continue
        if not args.dry_run:
            unload(group=name)
        pruned.append(name)
        if not args.json:
            env.out(f"group {name}: {'would be ' if args.dry_run else ''}unloaded (not in {cfg.path})")
    if args.json:
        doc = {"config": cfg.path, "dry_run": args.dry_run, "groups": [plan_json(p) for p in plans],
               "failed": failed, "pruned": pruned}
        env.out(json.dumps(doc, indent=2))
    elif not cfg.groups and not others:
        env.out(f"{cfg.path} names no group")
    return status


def add_commands(sub) -> None:
    p = add_command(
        sub,
        "apply",
        cmd_apply,
        [
            "rpctl apply",
            "rpctl apply -c ./rpctl.toml --dry-run",
            "rpctl apply --prune --json",
        ],
        description=(
            "Each [[group]] adopts the listeners of its `listen` endpoint whose serving process matches its\n"
            "`adopt` rule, named by `names` ({comm}-{i}: {i} is the lowest free number when a listener joins\n"
            "and stays with its socket); members whose socket closed leave; weights, drains and the pin mode\n"
            "are set by name.  A second apply with nothing changed publishes nothing.  Groups with `run` are\n"
            "kept by `rpctl serve`.  The README's \"Groups in a file\" documents every key."
        ),
    )
    config_option(p)
    p.add_argument("--dry-run", action="store_true", help="print what would change, change nothing")
    p.add_argument("--prune", action="store_true", help="unload the groups of this namespace the file does not name")
    json_option(p, help="print the plans as JSON")
