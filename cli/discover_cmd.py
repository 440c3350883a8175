"""`rpctl discover`: a port's listeners, the processes holding each one and the one serving it.

`discover --json` prints {"endpoints": [{endpoint, protocol, family, address,
port, reuseport, listeners: [{cookie, inode, queue, backlog, server: {pid, fd,
comm} or null, servers: [{pid, fd, comm}], epolled_by: [pid], holders: [{pid, fd,
comm}]}]}]}: snake_case keys, stable.  `servers` are the holding processes seen
serving the socket (their epoll watches it, or they wait in accept() on it:
several when a prefork server's children share it), `server` the first of them
(the only holder when none is seen serving; null when that cannot be told); `reuseport` is null when it could not be read.
The renderers are pure functions, like render.py's.
"""

from __future__ import annotations

import json
import socket
from typing import TYPE_CHECKING, Any, Optional

from rpctl.controller.contract.errors import ExitStatus

from .common import Environment, add_command, json_option, port_number

if TYPE_CHECKING:
    from rpctl.controller.kernel.discover import Endpoint, Holder, Listener

__all__ = ["add_commands", "cmd_discover", "endpoint_table", "endpoints_json"]


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
        "servers": [_holder_json(h) for h in lst.servers],
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
            more = f" +{len(lst.servers) - 1} more" if len(lst.servers) > 1 else ""
            server, fd = f"{lst.server.pid} {lst.server.comm}{more}", str(lst.server.fd)
        elif lst.epolled_by:
            server, fd = f"? epolled by {', '.join(map(str, lst.epolled_by))}", "-"
        else:
            server, fd = "? none is seen serving it", "-"
        t.add_row(str(lst.cookie), str(lst.queue), server, fd, _holders_cell(lst))
    return t


# Handler ---------------------------------------------------------------------------


def cmd_discover(env: Environment, args) -> ExitStatus:
    from rpctl.controller.kernel import discover

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


def add_commands(sub) -> None:
    p = add_command(
        sub,
        "discover",
        cmd_discover,
        ["rpctl discover", "rpctl discover --port 8080", "rpctl discover --port 8080 --json"],
    )
    p.add_argument("--port", type=port_number, metavar="P", help="only this port")
    p.add_argument("--proto", choices=("tcp", "udp"), help="only TCP listeners or only bound UDP sockets")
    json_option(p)
