"""`rpctl adopt`: register every SO_REUSEPORT listener of a running server's port in one step."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rpctl.controller.contract.errors import ExitStatus

from .common import Environment, add_command, group_option, group_options, group_options_of, port_number

if TYPE_CHECKING:
    from rpctl.controller.ops.adopt import AdoptResult


def adopt_lines(results: list[AdoptResult]) -> list[str]:
    """One line per listener, then what it came to."""
    if not results:
        return []
    lines = []
    for r in results:
        who = f"pid {r.pid} {r.comm} fd {r.fd}"
        if r.status == "registered":
            lines.append(f"registered {r.name} ({who}) in group {r.group} at index {r.index}")
        else:
            lines.append(f"{r.name} ({who}): already a member of group {r.group}")
    new = [r for r in results if r.status == "registered"]
    group, endpoint = results[0].group, results[0].endpoint
    if new:
        created = " (created it)" if any(r.created for r in new) else ""
        lines.append(
            f"adopted {len(new)} listener{'s' if len(new) != 1 else ''} of {endpoint} "
            f"into group {group}{created}; the program steers them"
        )
    else:
        lines.append(f"nothing to do: every listener of {endpoint} is already a member of group {group}")
    return lines


def cmd_adopt(env: Environment, args) -> ExitStatus:
    from rpctl.controller.ops import adopt

    results = adopt.adopt(
        args.port, group=args.group, name_format=args.name_format, proto=args.proto, addr=args.addr,
        options=group_options_of(args),
    )
    for line in adopt_lines(results):
        env.out(line)
    return ExitStatus.OK


def add_commands(sub) -> None:
    p = add_command(
        sub,
        "adopt",
        cmd_adopt,
        [
            "rpctl adopt --port 8080",
            "rpctl adopt --port 8080 --group web --name-format 'nginx-{i}'",
            "rpctl adopt --port 53 --proto udp --addr 127.0.0.1",
        ],
    )
    p.add_argument("--port", type=port_number, required=True, metavar="P", help="the port whose listeners to adopt")
    group_option(p, help="group to join or create (default: the port's group, or <proto>[6]-<port>)")
    p.add_argument(
        "--name-format",
        default="{comm}-{i}",
        metavar="F",
        help="member names from {comm} (process name), {pid}, {fd}, {i} (the lowest number from 1 no member "
        "has); default {comm}-{i}",
    )
    p.add_argument("--proto", choices=("tcp", "udp"), help="when the port has TCP and UDP sockets: which")
    p.add_argument("--addr", metavar="A", help="when the port has sockets on several addresses: which")
    group_options(p)
