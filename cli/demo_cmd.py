"""`rpctl demo`: demo workers on one port under load, drained, weighted and undrained;
`rpctl demo-worker`: one demo worker, a server to try `rpctl run` and `rpctl adopt` with.

The demo itself (its runner, worker and load generator) is the package
rpctl.cli.demo; this module only puts the command on the parser.
"""

from __future__ import annotations

from rpctl.controller.contract.errors import ExitStatus

from .common import Environment, add_command


def cmd_demo(env: Environment, args) -> ExitStatus:
    from .demo import runner

    return runner.run(env, args)


def cmd_demo_worker(env: Environment, args) -> ExitStatus:
    from .demo import worker

    return ExitStatus(worker.serve(args))


def add_commands(sub) -> None:
    p = add_command(
        sub,
        "demo",
        cmd_demo,
        ["rpctl demo", "rpctl demo --port 18080 --workers 4", "rpctl demo --keep   # then `rpctl status` elsewhere"],
        log_prefix="rpctl run",
    )
    p.add_argument("--port", type=int, default=18080, help="TCP port on 127.0.0.1 (default 18080)")
    p.add_argument("--workers", type=int, default=4, help="number of demo workers (2..16, default 4)")
    p.add_argument("--step-seconds", type=float, default=3.0, help="load per demo step (default 3 s)")
    p.add_argument("--keep", action="store_true", help="keep group and workers running after the steps, until Ctrl-C")

    from .demo import worker  # stdlib and sockets only: cheap enough for the parser

    p = add_command(
        sub,
        "demo-worker",
        cmd_demo_worker,
        [
            "rpctl demo-worker --name solo --listen 127.0.0.1:8080   # curl -s http://127.0.0.1:8080/ says solo",
            "rpctl demo-worker --name dns-1 --proto udp --listen '[::1]:5353'",
        ],
        description="Under socket activation (rpctl run, systemd) it serves the socket on fd 3; else\n"
                    "it listens on --listen with SO_REUSEPORT.  It prints `ready pid=PID fd=FD\n"
                    "port=PORT` once it serves; on SIGTERM it serves what is queued and exits 0.\n\n"
                    "Four of them as the members of one group:\n"
                    "  rpctl run --group web -n 4 --listen 127.0.0.1:8080 -- rpctl demo-worker --name '$RPCTL_MEMBER'",
    )
    worker.add_arguments(p)
