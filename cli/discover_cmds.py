"""`rpctl discover` and `rpctl adopt`: find a port's listeners and who serves them; register them all.

add_commands(add) puts both commands on the parser, given the `add` helper
of cli/main.py's build_parser.  This module does not import cli/main.py
(main imports it), and its renderers are pure functions, like render.py's.

`discover --json` prints {"endpoints": [{endpoint, protocol, family, address,
port, reuseport, listeners: [{cookie, inode, queue, backlog, server: {pid, fd,
comm} or null, epolled_by: [pid], holders: [{pid, fd, comm}]}]}]}: snake_case
keys, stable.  `server` is the holding process whose epoll watches the socket
(null when that cannot be told); `reuseport` is null when it could not be read.
"""

from __future__ import annotations

import argparse
import json
import socket
from typing import TYPE_CHECKING, Any, Callable, Optional

from rpctl.controller.errors import ExitStatus

if TYPE_CHECKING:
    from rpctl.controller.discover import AdoptResult, Endpoint, Holder, Listener

__all__ = ["add_commands", "cmd_adopt", "cmd_discover", "endpoint_table", "endpoints_json"]

# build_parser's add(name, handler, help, examples) -> the command's parser
AddCommand = Callable[[str, Callable, str, list[str]], argparse.ArgumentParser]


# Rendering (pure) -------------------------------------------------------------------


def _holder_json(h: Optional[Holder]) -> Optional[dict[str, Any]]:
    return None if h is None else {"pid": h.pid, "fd": h.fd, "comm": h.comm}


def listener_json(lst: Listener) -> dict[str, Any]:
    return {
        "cookie": lst.cookie,
        "inode": lst.inode,
        "queue": lst.queue,
        "backlog": lst.backlog,
        "server": _holder_json(lst.server),
        "epolled_by": list(lst.epolled_by),
        "holders": [_holder_json(h) for h in lst.holders],
    }


def endpoint_json(ep: Endpoint) -> dict[str, Any]:
    return {
        "endpoint": ep.name,
        "protocol": ep.proto,
        "family": "ipv6" if ep.family == socket.AF_INET6 else "ipv4",
        "address": ep.addr,
        "port": ep.port,
        "reuseport": ep.reuseport,
        "listeners": [listener_json(lst) for lst in ep.listeners],
    }


def endpoints_json(eps: list[Endpoint]) -> dict[str, Any]:
    return {"endpoints": [endpoint_json(ep) for ep in eps]}


def _yes_no(x: Optional[bool]) -> str:
    return "unknown" if x is None else ("yes" if x else "no")


def _holders_cell(lst: Listener) -> str:
    fds = {h.fd for h in lst.holders}
    if len(fds) == 1:  # forked servers hold a socket under one fd number everywhere
        return f"{', '.join(map(str, lst.holder_pids))} (fd {next(iter(fds))})"
    return ", ".join(f"{h.pid}:{h.fd}" for h in lst.holders) or "-"


def endpoint_table(ep: Endpoint):
    from rich.table import Table

    n = len(ep.listeners)
    t = Table(
        title=f"{ep.name}  reuseport {_yes_no(ep.reuseport)}  {n} socket{'s' if n != 1 else ''}",
        title_justify="left",
    )
    t.add_column("cookie", justify="right")
    t.add_column("queue", justify="right")
    t.add_column("server")
    t.add_column("fd", justify="right")
    t.add_column("holders (pids)")
    for lst in ep.listeners:
        if lst.server is not None:
            server, fd = f"{lst.server.pid} {lst.server.comm}", str(lst.server.fd)
        elif lst.epolled_by:
            server, fd = f"? epolled by {', '.join(map(str, lst.epolled_by))}", "-"
        else:
            server, fd = "? none epolls it", "-"
        t.add_row(str(lst.cookie), str(lst.queue), server, fd, _holders_cell(lst))
    return t


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


# Handlers ---------------------------------------------------------------------------------


def cmd_discover(env, args) -> ExitStatus:
    from rpctl.controller import discover

    eps = discover.discover(port=args.port, proto=args.proto)
    if args.json:
        env.out(json.dumps(endpoints_json(eps), indent=2))
        return ExitStatus.OK
    if not eps:
        what = {"tcp": "listening TCP socket", "udp": "bound UDP socket"}.get(
            args.proto, "listening TCP or bound UDP socket"
        )
        where = f" on port {args.port}" if args.port else ""
        env.out(f"no {what}{where} in this network namespace")
        return ExitStatus.OK
    console = env.console()
    for ep in eps:
        console.print(endpoint_table(ep))
    return ExitStatus.OK


def cmd_adopt(env, args) -> ExitStatus:
    from rpctl.controller import discover

    results = discover.adopt(
        args.port, group=args.group, name_format=args.name_format, proto=args.proto, addr=args.addr
    )
    for line in adopt_lines(results):
        env.out(line)
    return ExitStatus.OK


# Parser --------------------------------------------------------------------------------------


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"{port} is out of range 1..65535")
    return port


def add_commands(add: AddCommand) -> None:
    """Add discover and adopt through build_parser's add(name, handler, help, examples)."""
    p = add(
        "discover",
        cmd_discover,
        "list listening sockets with the processes holding each one and the one serving it",
        ["rpctl discover", "rpctl discover --port 8080", "rpctl discover --port 8080 --json"],
    )
    p.add_argument("--port", type=_port, metavar="P", help="only this port")
    p.add_argument("--proto", choices=("tcp", "udp"), help="only TCP listeners or only bound UDP sockets")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = add(
        "adopt",
        cmd_adopt,
        "register every SO_REUSEPORT listener of a port, each under the process whose epoll watches it",
        [
            "rpctl adopt --port 8080",
            "rpctl adopt --port 8080 --group web --name-format 'nginx-{i}'",
            "rpctl adopt --port 53 --proto udp --addr 127.0.0.1",
        ],
    )
    p.add_argument("--port", type=_port, required=True, metavar="P", help="the port whose listeners to adopt")
    p.add_argument(
        "--group",
        "-g",
        metavar="G",
        help="group to join or create (default: the port's group, or <proto>[6]-<port>)",
    )
    p.add_argument(
        "--name-format",
        default="{comm}-{pid}",
        metavar="F",
        help="member names from {comm} (process name), {pid}, {fd}, {i} (1, 2, ...); default {comm}-{pid}",
    )
    p.add_argument("--proto", choices=("tcp", "udp"), help="when the port has TCP and UDP sockets: which")
    p.add_argument("--addr", metavar="A", help="when the port has sockets on several addresses: which")
