"""`rpctl serve`: keep the groups of a file true to it while servers come and go."""

from __future__ import annotations

from rpctl.controller.contract.errors import ExitStatus

from .common import Environment, add_command, config_option

DESCRIPTION = """\
Keep every group of FILE (the config file, see `rpctl apply`) as the file
describes it, until SIGTERM or SIGINT.  Several times a second serve
looks at each group's port (one sock_diag dump) and at its members'
processes; when a listener appeared or closed, or a member's process
exited (a reload that keeps its sockets), the group is reconciled in one
atomic publish: a new listener of a process the group's adopt rule
matches becomes a member within a second and gets its share, a closed one
is removed, pids follow reloads.  A listener the rule does not match is
logged once as unmanaged and never admitted.  Groups with `run` are
started and restarted as `rpctl run` does.  One log line per change.

SIGHUP rereads FILE (a file with an error is logged and the last good one
stays in force).  SIGTERM or SIGINT: exit 0, steering goes on as it is
(the state is pinned); the children of `run` groups are stopped as `rpctl
run` stops them.  For systemd (Type=notify): READY=1 after the first
reconcile, RELOADING=1/READY=1 around a reread, STOPPING=1; see
contrib/systemd/rpctl.service."""


def cmd_serve(env: Environment, args) -> ExitStatus:
    from rpctl.controller.ops.serve import Serve

    serve = Serve(args.config)
    if args.metrics is None:
        return ExitStatus(serve.run())
    from rpctl.controller.kernel.sockets import hostport_text, parse_listen

    from .exporter import GroupCollector, start_exporter

    host, port = parse_listen(args.metrics, "serve: --metrics")
    collector = GroupCollector(None, log=lambda message: env.err(f"rpctl serve: metrics: {message}"))
    server, thread = start_exporter(host, port, collector)
    try:
        env.err(f"rpctl serve: metrics on http://{hostport_text(host, server.server_address[1])}/metrics")
        return ExitStatus(serve.run())
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def add_commands(sub) -> None:
    p = add_command(
        sub,
        "serve",
        cmd_serve,
        [
            "rpctl serve                                  # /etc/rpctl/rpctl.toml",
            "rpctl serve -c ./rpctl.toml --metrics 127.0.0.1:9464",
            "rpctl serve -c ./rpctl.toml & kill -HUP $!    # reread the file",
        ],
        description=DESCRIPTION,
        log_prefix="rpctl serve",
    )
    config_option(p)
    p.add_argument("--metrics", metavar="ADDR:PORT",
                   help="also serve `rpctl metrics`' endpoint there ([V6]:PORT for IPv6)")
