"""`rpctl weights`, `rpctl drain`, `rpctl undrain`: how new connections are shared.

Each change is one atomic publish of the group's next generation (see
controller/store/generation.py): the program never sees half a change.
"""

from __future__ import annotations

import json

from rpctl.controller.contract.errors import ExitStatus, UsageError

from .common import Environment, add_command, drain_progress, group_option, json_option, parse_assignments


def cmd_weights(env: Environment, args) -> ExitStatus:
    from rpctl.controller.read.views import read_view

    if args.assignments:
        from rpctl.controller.store import group  # the writer, for a write only

        group.set_weights(parse_assignments(args.assignments), group=args.group)
    # None: queue depths only when a member is draining (its state depends on them).
    view = read_view(args.group, with_queues=None)
    if args.json:
        from .json_docs import weights_json

        env.out(json.dumps(weights_json(view), indent=2))
    else:
        from . import render

        console = env.console()
        console.print(render.weights_table(view, console.width))
    return ExitStatus.OK


def cmd_drain(env: Environment, args) -> ExitStatus:
    from rpctl.controller.ops import drain
    from rpctl.controller.store import group

    if args.generation is not None:
        return _wait_generation(env, args)
    if args.name is None:
        raise UsageError("drain: give a member's NAME, or --generation N")
    name = group.set_draining(args.name, True, force=args.force, group=args.group)
    env.out(f"draining {args.name} in group {name}: it takes no new connection")
    if args.wait:
        member = drain.wait_drained(
            args.name,
            args.timeout,
            group=name,
            progress=lambda q, h, f: env.err(f"{args.name}: {drain_progress(q, h, f)}"),
        )
        flows = "" if member.flows is None else " and it holds no live flow"
        env.out(f"{args.name} drained: its queue is empty{flows}")
    return ExitStatus.OK


def _wait_generation(env: Environment, args) -> ExitStatus:
    """--generation: serve drains a server generation (the file's `generations`); this waits for it."""
    from rpctl.controller.ops import drain

    if args.name is not None:
        raise UsageError("drain: give a member's NAME or --generation N, not both")
    label = f"generation {args.generation}"
    gen = drain.wait_generation_drained(
        args.generation, args.timeout, group=args.group,
        progress=lambda q, f: env.err(f"{label}: {q} queued" + ("" if f is None else f", {f} live flows")),
    )
    env.out(f"{label} drained ({', '.join(gen.members)}): safe to stop")
    return ExitStatus.OK


def cmd_undrain(env: Environment, args) -> ExitStatus:
    from rpctl.controller.store import group

    name = group.set_draining(args.name, False, group=args.group)
    env.out(f"undrained {args.name} in group {name}: back at its weight")
    return ExitStatus.OK


def add_commands(sub) -> None:
    p = add_command(
        sub,
        "weights",
        cmd_weights,
        ["rpctl weights", "rpctl weights worker-1=3 worker-2=1", "rpctl weights --json"],
    )
    p.add_argument("assignments", nargs="*", metavar="NAME=WEIGHT")
    json_option(p)
    group_option(p)

    p = add_command(
        sub,
        "drain",
        cmd_drain,
        ["rpctl drain worker-3", "rpctl drain worker-3 --wait --timeout 30",
         "rpctl drain --wait --group web --generation 1"],
    )
    p.add_argument("name", nargs="?", help="the member to drain (not with --generation)")
    p.add_argument("--wait", action="store_true",
                   help="wait until the member's queue is empty and, in a UDP group with flow affinity, "
                        "no live flow is left (shown while waiting)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds --wait may take (default 60; exit 8 past it)")
    p.add_argument("--force", action="store_true", help="drain even the last live member")
    p.add_argument("--generation", type=int, metavar="N",
                   help="wait (whatever --wait says) until server generation N, which rpctl serve drains, "
                        "is drained; changes nothing")
    group_option(p)

    p = add_command(sub, "undrain", cmd_undrain, ["rpctl undrain worker-3", "rpctl undrain worker-3 --group web"])
    p.add_argument("name")
    group_option(p)
