"""sd_notify: tell a service manager (systemd's Type=notify) how a long-running rpctl is doing.

The protocol is one AF_UNIX datagram of "KEY=VALUE" lines to the socket
named by $NOTIFY_SOCKET; a name starting with '@' is in the abstract
namespace (the '@' becomes a NUL byte).  Without NOTIFY_SOCKET, or when
the manager is gone, nothing is sent: readiness is a courtesy to the
manager, never a reason for rpctl to fail.  Written here instead of
taken from python-systemd, which needs libsystemd and is not on PyPI.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Mapping, Optional

__all__ = ["READY", "STOPPING", "notify", "reloading", "socket_address"]

log = logging.getLogger("rpctl.notify")

READY = "READY=1"
STOPPING = "STOPPING=1"


def reloading() -> str:
    """RELOADING=1 with the MONOTONIC_USEC that systemd 253+ asks of Type=notify-reload
    (older managers ignore the extra line)."""
    return f"RELOADING=1\nMONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}"


def socket_address(environ: Mapping[str, str] = os.environ) -> Optional[str]:
    """The address of $NOTIFY_SOCKET as socket.sendto() takes it; None when unset or not AF_UNIX."""
    name = environ.get("NOTIFY_SOCKET", "")
    if name.startswith("@"):
        return "\0" + name[1:]
    if name.startswith("/"):
        return name
    return None  # unset, or a vsock address (a VM's manager), which rpctl does not speak


def notify(state: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Send `state` ("READY=1", several lines allowed); True when a manager received it."""
    address = socket_address(environ)
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.sendto(state.encode(), address)
    except OSError as e:
        log.warning("could not tell the service manager %s: %s", state.splitlines()[0], e.strerror or e)
        return False
    return True
