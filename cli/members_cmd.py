"""`rpctl register`, `rpctl unregister`, `rpctl unload`: which sockets are a group's members.

The first member of a port creates the group (program loaded, maps in
bpffs, program attached); unload removes the group and gives its sockets
back to the kernel's own selection.
"""

from __future__ import annotations

from rpctl.controller.contract.errors import ExitStatus

from .common import Environment, add_command, group_option, group_options, group_options_of


def cmd_register(env: Environment, args) -> ExitStatus:
    from rpctl.controller.store import group

    r = group.register(args.name, args.pid, args.fd, group=args.group, weight=args.weight, replace=args.replace,
                       options=group_options_of(args), quic_server_id=args.quic_server_id)
    verb = "replaced the socket of" if r.replaced else "registered"
    created = f" (created group {r.group})" if r.created else ""
    sid = f" with QUIC server id {r.quic_server_id}" if r.quic_server_id is not None else ""
    env.out(f"{verb} {r.member} in group {r.group} at index {r.index}{sid}{created}")
    if r.created and not r.migration and r.proto == "tcp":
        env.err(
            f"rpctl: warning: group {r.group} has no listener migration (kernel older than 5.14, or RPCTL_MIGRATE=0): "
            "connections queued on a listener that closes are lost; drain and wait before closing one"
        )
    return ExitStatus.OK


def cmd_unregister(env: Environment, args) -> ExitStatus:
    from rpctl.controller.store import group

    name = group.unregister(args.name, group=args.group)
    env.out(f"unregistered {args.name} from group {name}: its socket gets no new connection while rpctl steers")
    return ExitStatus.OK


def cmd_unload(env: Environment, args) -> ExitStatus:
    from rpctl.controller.store import group

    name, detached = group.unload(group=args.group, force=args.force)
    how = "detached the program and " if detached else ""
    env.out(f"{how}removed group {name}: its sockets are back on the kernel's own selection")
    return ExitStatus.OK


def add_commands(sub) -> None:
    p = add_command(
        sub,
        "register",
        cmd_register,
        [
            "rpctl register worker-1 --pid 4242 --fd 3",
            "rpctl register canary --pid 4343 --fd 5 --weight 0 -g web",
            "rpctl register dns-1 --pid 4444 --fd 3 --flow-idle-timeout 10",
            "rpctl register quic-1 --pid 4545 --fd 3 --quic --quic-server-id 0a",
        ],
    )
    p.add_argument("name", help="member name, unique in the group")
    p.add_argument("--pid", type=int, required=True, help="process holding the socket")
    p.add_argument("--fd", type=int, required=True, help="the socket's fd number in that process")
    p.add_argument("--weight", type=int, default=1, help="weight (default 1, range 0..10000)")
    p.add_argument("--replace", action="store_true", help="swap the socket of an existing member of that name")
    p.add_argument("--quic-server-id", metavar="HEX",
                   help="QUIC groups: the member's QUIC-LB server id (default: its own on --replace, else the lowest free)")
    group_option(p)
    group_options(p)

    p = add_command(sub, "unregister", cmd_unregister,
                    ["rpctl unregister worker-3", "rpctl unregister worker-3 --group web"])
    p.add_argument("name")
    group_option(p)

    p = add_command(
        sub,
        "unload",
        cmd_unload,
        ["rpctl unload", "rpctl unload --group web"],
    )
    p.add_argument("--force", action="store_true", help="remove the state even when the program cannot be detached")
    group_option(p)
