"""Hand-built endpoints as discover finds them: listeners on one port, the processes that hold
them and the one that serves each."""

from __future__ import annotations

import socket

from rpctl.controller.kernel.discover import Endpoint, Holder, Listener


def endpoint(*listeners: Listener, proto: str = "tcp", addr: str = "127.0.0.1", port: int = 8080) -> Endpoint:
    return Endpoint(proto, socket.AF_INET, addr, port, list(listeners), True)


def listener(cookie: int, *holders: tuple[int, int], server: int | None = None, polled: tuple = ()) -> Listener:
    """Socket `cookie` held by (pid, fd) each, all as comm "srv"; served by pid `server`, epolled by `polled`."""
    hs = [Holder(pid, fd, "srv") for pid, fd in holders]
    srv = next((h for h in hs if h.pid == server), None)
    return Listener(cookie, cookie + 1000, 0, 0, 128, hs, list(polled), srv)
