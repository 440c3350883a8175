"""Noticing that a group's servers changed, cheaply enough to ask several times a second.

`rpctl serve` keeps groups true to their file.  The full reconcile (which
reads /proc to find who serves each listener) is what costs; most of the
time nothing changed.  So serve looks at two cheap things per group and
reconciles only when one of them differs from what the last reconcile left:

- the cookies of the endpoint's listeners, from one port-filtered
  sock_diag dump of one address family (a new listener, a closed one);
- which member pids are alive (a reload that keeps the sockets replaces
  the processes, and the only trace of that is that the old pids exit).

A listener that stays unmanaged, or a member whose process died without a
successor, is part of what the last reconcile left, so it does not make
serve reconcile again and again; a periodic full reconcile catches what
these two signs cannot see (docs/decisions/0012).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Iterable, Optional

from ..kernel import diag, sockets

__all__ = ["Signs", "difference", "listener_cookies", "live_pids", "signs"]


@dataclass(frozen=True)
class Signs:
    """What serve compares between two looks at a group."""

    listeners: frozenset[int]  # cookies of the endpoint's listeners
    live_pids: frozenset[int]  # member pids that still run


def difference(settled: Optional[Signs], now: Signs) -> Optional[str]:
    """Why the group needs a reconcile (a phrase for the log), or None when
    nothing changed since `settled` (None: never reconciled)."""
    if settled is None:
        return "first look"
    added = now.listeners - settled.listeners
    closed = settled.listeners - now.listeners
    exited = settled.live_pids - now.live_pids
    parts = []
    if added:
        parts.append(f"{len(added)} new listener{'s' if len(added) > 1 else ''}")
    if closed:
        parts.append(f"{len(closed)} listener{'s' if len(closed) > 1 else ''} closed")
    if exited:
        parts.append(f"pid{'s' if len(exited) > 1 else ''} {', '.join(map(str, sorted(exited)))} exited")
    return "; ".join(parts) or None


def listener_cookies(key: sockets.EndpointKey) -> frozenset[int]:
    """Cookies of the listeners of one endpoint: a dump of its port and family
    only, filtered to its address (a wildcard group's endpoint is the wildcard)."""
    want = ipaddress.ip_address(key.addr)
    found = diag.listeners(sockets.proto_number(key.proto), key.port, key.family)
    return frozenset(c for c, d in found.items() if ipaddress.ip_address(d.local_addr.split("%")[0]) == want)


def live_pids(pids: Iterable[int]) -> frozenset[int]:
    """The pids (> 0) of `pids` that still exist."""
    return frozenset(p for p in pids if p > 0 and sockets.process_exists(p))


def signs(key: sockets.EndpointKey, member_pids: Iterable[int]) -> Signs:
    return Signs(listener_cookies(key), live_pids(member_pids))
