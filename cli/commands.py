"""Every command of rpctl: its name, the module that defines it and its one-line help,
in the order `rpctl --help` lists them.

The one-line help lives here, not in the command's module, because `rpctl --help`
lists every command and `rpctl CMD ...` imports the module of CMD alone
(cli/main.py): the other commands are their name and help line, so a command
pays for its own imports and for no one else's.  A command module adds its
commands with common.add_command(), which takes their help from here.
"""

from __future__ import annotations

from typing import NamedTuple, Optional


class Command(NamedTuple):
    name: str
    module: str  # cli/<module>.py: its arguments, examples and handler
    help: str


COMMANDS = (
    Command("register", "members_cmd",
            "make a worker's SO_REUSEPORT socket a member (the first member creates the group)"),
    Command("unregister", "members_cmd", "remove a member from its group"),
    Command("unload", "members_cmd",
            "detach the program and remove the group's pinned state (sockets are left alone)"),
    Command("weights", "steering_cmd",
            "show weights and shares, or set NAME=WEIGHT for some members (the others keep theirs)"),
    Command("drain", "steering_cmd",
            "stop new connections to a member at once; --wait returns when its queue is empty "
            "(UDP: and its live flows ended)"),
    Command("undrain", "steering_cmd", "bring a drained member back at its weight"),
    Command("status", "status_cmd", "list groups and members"),
    Command("doctor", "doctor_cmd",
            "check kernel, privileges, bpffs, kernel headers and bcc, and say how to fix what is missing; "
            "warn about unmanaged listeners and stale state folders"),
    Command("cleanup", "cleanup_cmd",
            "remove the state folders (in bpffs) of network namespaces that no longer exist"),
    Command("demo", "demo_cmd",
            "run demo workers on one port under load, and drain, weigh and undrain them while showing shares"),
    Command("demo-worker", "demo_cmd",
            "serve as one demo worker: every TCP (HTTP) connection or UDP datagram answered with its name"),
    Command("dashboard", "dashboard_cmd",
            "live view of groups and members: state, weights, shares, rates, queues and recent events (q quits)"),
    Command("discover", "discover_cmd",
            "list listening sockets with the processes holding each one and the one serving it"),
    Command("adopt", "adopt_cmd",
            "register every SO_REUSEPORT listener of a port, each under the process whose epoll watches it"),
    Command("apply", "apply_cmd",
            "make the groups of this network namespace what a config file says, each group in one atomic publish"),
    Command("run", "run_cmd",
            "start N copies of a command on one port (socket activation on fd 3) as members, and restart them"),
    Command("restart", "restart_cmd",
            "restart members with no connection lost: drain, wait, stop, start, register, undrain"),
    Command("rollout", "restart_cmd",
            "restart every member of a group, --batch at a time, stopping at the first failure"),
    Command("metrics", "metrics_cmd",
            "serve member counters, weights, states and queues to Prometheus until Ctrl-C or SIGTERM"),
    Command("serve", "serve_cmd",
            "keep the groups of a config file true to it as servers reload (a long-running process)"),
    Command("promote", "generations_cmd",
            "give the canary generation of a group (generations = { canary = N }) all new work; older ones drain"),
    Command("rollback", "generations_cmd",
            "drain the newest generation of a group; the one before it takes all new work again"),
    Command("pin", "pin_cmd",
            "serve each connection by the member of its CPU (cpu) or RSS queue (rss), or stop (off)"),
)

BY_NAME = {c.name: c for c in COMMANDS}

# The command modules, in the order of their first command.
MODULES = tuple(dict.fromkeys(c.module for c in COMMANDS))


def command_word(argv: list[str]) -> Optional[str]:
    """The command a command line names: its first word that is not an option (rpctl's own
    options, --traceback and --version, take no value); None when there is none."""
    return next((a for a in argv if not a.startswith("-")), None)
