"""`rpctl run`: start N copies of a command as the members of one group, and keep them running."""

from __future__ import annotations

import argparse

from rpctl.controller.contract.errors import ExitStatus
from rpctl.controller.ops.run_defaults import (  # not the launcher: `rpctl run --help` builds this parser
    BACKOFF_INITIAL,
    BACKOFF_MAX,
    DEFAULT_LISTEN,
    LISTEN_BACKLOG,
    MAX_COUNT,
    RUN_NAMES,
    STABLE_AFTER,
    STOP_TIMEOUT,
)

from .common import Environment, add_command, group_option, group_options, group_options_of

DESCRIPTION = f"""\
Start N copies of CMD, each with its own SO_REUSEPORT socket on HOST:PORT,
register them as members {RUN_NAMES.format(i=1)}..{RUN_NAMES.format(i='N')} (see --name) of one group, and
keep them running: a child that dies is drained at once, restarted with
exponential backoff ({BACKOFF_INITIAL:g} s doubling to {BACKOFF_MAX:g} s, back to {BACKOFF_INITIAL:g} s after a child
lived {STABLE_AFTER:g} s), registered again under the same name and undrained.  The
launcher keeps its own copy of every socket, as systemd does, so the
connections queued for a dead child wait for its replacement; only those
the dead process had already accepted are lost.

SIGTERM, SIGINT or SIGHUP (its terminal closed): stop the children
(SIGTERM, SIGKILL after {STOP_TIMEOUT:g} s), unregister them, and unload the group
if run created it (or took it over) and no one else is in it.  Exit 0.  A
second signal kills the children at once.  Under nohup, SIGHUP stays ignored.
A SIGKILLed run cleans nothing up: its children die with it and its group
stays with every member gone, until the next run of that group takes the
group over (and so unloads it when it stops in turn).

Each child gets, as systemd socket activation gives:
  fd 3             its socket (TCP: listening, backlog {LISTEN_BACKLOG})
  LISTEN_FDS=1     LISTEN_PID=<its pid>     LISTEN_FDNAMES=<member name>
  RPCTL_MEMBER=<member name>
  RPCTL_LAUNCHER_PID, RPCTL_COMMAND_ID: the launcher's pid and a checksum of the
                   command: a later launcher takes back (rather than refuses)
                   the children of `rpctl serve` left by a SIGKILLed serve
  RPCTL_QUIC_SERVER_ID=<hex>  with --quic (or in a QUIC group): the member's
                   QUIC-LB server id, the same across restarts
$RPCTL_MEMBER, ${{RPCTL_MEMBER}}, $LISTEN_FDNAMES and ${{LISTEN_FDNAMES}} in CMD
are replaced by the member name (quote them so that your shell does not);
no other $ is touched.  CMD must serve from the process run starts (no
daemonizing).  Children die with run, even with a SIGKILLed run."""


def cmd_run(env: Environment, args) -> ExitStatus:
    from rpctl.controller.ops.launcher import Launcher

    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    launcher = Launcher(
        args.group,
        args.count,
        cmd,
        name_format=args.name,
        listen=args.listen,
        proto=args.proto,
        weight=args.weight,
        options=group_options_of(args),
    )
    return ExitStatus(launcher.run())


def add_commands(sub) -> None:
    p = add_command(
        sub,
        "run",
        cmd_run,
        [
            "rpctl run --group web -n 4 --listen 127.0.0.1:8080 -- "
            "rpctl demo-worker --name '$LISTEN_FDNAMES'",
            "rpctl run --group web -n 1 --name canary --listen 127.0.0.1:8080 -- ./server-v2   # joins web",
            "rpctl run -g dns -n 8 --proto udp --listen '[::1]:5353' -- ./resolver --id '$RPCTL_MEMBER'",
            "rpctl run -g h3 -n 4 --proto udp --quic --listen 0.0.0.0:443 -- ./h3-server   # $RPCTL_QUIC_SERVER_ID",
        ],
        description=DESCRIPTION,
        log_prefix="rpctl run",
    )
    group_option(p, help="group name (default: the group of HOST:PORT, else tcp-PORT)")
    p.add_argument("-n", "--count", type=int, required=True, metavar="N",
                   help=f"number of children (1..{MAX_COUNT})")
    p.add_argument("--name", default=RUN_NAMES, metavar="FORMAT",
                   help=f"member names; {{i}} is 1..N (default {RUN_NAMES})")
    p.add_argument("--listen", default=DEFAULT_LISTEN, metavar="HOST:PORT",
                   help=f"address to listen on, [V6]:PORT for IPv6 (default {DEFAULT_LISTEN})")
    p.add_argument("--proto", choices=("tcp", "udp"), default="tcp", help="protocol (default tcp)")
    p.add_argument("--weight", type=int, default=1, help="weight of every member (default 1, range 0..10000)")
    group_options(p)
    p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD ...", help="the command each child runs")
