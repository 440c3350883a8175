"""`rpctl promote` and `rpctl rollback`: the operator's verdict on a group's newest server generation.

Both read the group from the file (its `generations` rule and weights) and
make it what the file says with the verdict given, in one publish, as
`rpctl apply` would (docs/decisions/0021); `rpctl serve` keeps it so.
"""

from __future__ import annotations

from rpctl.controller.contract.errors import ExitStatus

from .common import Environment, add_command, config_option


def _give(env: Environment, args, promoted: bool) -> ExitStatus:
    from rpctl.controller.ops import config, reconcile
    from rpctl.controller.tables.server_generations import Verdict

    spec = config.load(args.config).group(args.group)
    p = reconcile.reconcile(spec, verdict=Verdict.PROMOTED if promoted else Verdict.ROLLED_BACK)
    for line in p.lines():
        env.out(line)
    return ExitStatus.OK


def cmd_promote(env: Environment, args) -> ExitStatus:
    return _give(env, args, promoted=True)


def cmd_rollback(env: Environment, args) -> ExitStatus:
    return _give(env, args, promoted=False)


def add_commands(sub) -> None:
    for name, handler, what in (
        ("promote", cmd_promote, "the canary (the newest generation) takes all new work; the older ones drain"),
        ("rollback", cmd_rollback, "the newest generation drains; the one before it takes all new work again"),
    ):
        p = add_command(
            sub, name, handler,
            [f"rpctl {name} web", f"rpctl {name} web -c ./rpctl.toml"],
            description=(
                f"With `generations` in the group's [[group]] of the file: {what}.\n"
                "The verdict stays with that generation's members: `rpctl serve` keeps it."
            ),
        )
        p.add_argument("group", help="the group, as the file names it")
        config_option(p)
