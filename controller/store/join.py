"""join(): a worker that made its own SO_REUSEPORT socket makes it a member.

For workers that are not started by `rpctl run` and would rather not be
registered from outside: the worker calls join() on its listening socket
and becomes a member under its own name, as `rpctl register NAME --pid
<its pid> --fd <the socket's fd>` would make it.

Privileges, and who needs them:

* Creating a group (the first member of a port), or writing one (every
  join), loads BPF and writes BPF maps pinned under /sys/fs/bpf/rpctl: the
  caller needs CAP_BPF and CAP_NET_ADMIN (or CAP_SYS_ADMIN), and write
  access to those 0700 folders, i.e. in practice root.
* The socket is taken with pidfd_getfd(2) from the caller itself.  The
  kernel's ptrace check always lets a process reach its own fds, so no
  CAP_SYS_PTRACE is needed for that (root has it anyway).  Taking another
  process's fd (`rpctl register`) needs ptrace access to it: the same user
  where Yama allows it, else CAP_SYS_PTRACE.
* An unprivileged worker cannot join itself.  It makes its socket, then
  asks a privileged rpctl to register it, e.g. by having its supervisor run
  `rpctl register NAME --pid <pid> --fd <fd>`, or it is started by
  `rpctl run`, which registers its children itself.

A joined member holds its socket alone: when the worker exits the socket
closes, the member shows as `gone`, and the program moves the connections
still queued on it to live members.  (A `rpctl run` member differs: the
launcher keeps a copy of the socket for the child's replacement.)
"""

from __future__ import annotations

import os
import socket
from typing import Optional

from .policy import DEFAULT_WEIGHT
from .registration import Registration, register
from .state import Layout

__all__ = ["join"]


def join(
    sock: socket.socket,
    name: str,
    group: Optional[str] = None,
    weight: int = DEFAULT_WEIGHT,
    replace: bool = False,
    layout: Optional[Layout] = None,
) -> Registration:
    """Register `sock` (SO_REUSEPORT; TCP: listening) of this process as member `name`.

    The group is the one named, else the group of the socket's address,
    else a new one named like `tcp-8080`; the first member creates it and
    attaches its program.  `replace=True` gives an existing member of that
    name this socket (a worker that restarted and joins again).  Errors are
    controller.errors exceptions: InvalidInput (bad socket, name, weight,
    duplicate name), PermissionDenied, Unsupported, NotFound, StateError.
    """
    return register(
        name,
        os.getpid(),
        sock.fileno(),
        group=group,
        weight=weight,
        replace=replace,
        layout=layout,
    )
