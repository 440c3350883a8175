"""Noticing that a group's servers changed, cheaply enough to ask several times a second.

`rpctl serve` keeps groups true to their file.  The full reconcile (which
reads /proc to find who serves each listener) is what costs; most of the
time nothing changed.  So serve looks at two cheap things per group and
reconciles only when one of them differs from what the last reconcile left:

- the cookies of the endpoint's listeners (a new listener, a closed one);
- which member pids are alive (a reload that keeps the sockets replaces
  the processes, and the only trace of that is that the old pids exit).

A listener that stays unmanaged, or a member whose process died without a
successor, is part of what the last reconcile left, so it does not make
serve reconcile again and again; a periodic check catches what these two
signs cannot see (docs/decisions/0012).

One Look serves every group at one moment, so that what serve spends per
interval does not grow with the number of groups: one sock_diag dump of
every listener per protocol and address family the groups use (not one per
group), split by endpoint here; each pid checked once however many groups
name it; the accept queues the adaptive loops sample, from the same dump;
and, when asked for (the periodic check), one discover() of the
namespace's listeners and who serves them: one /proc scan for all groups.
And when the look finds what the last one left (Quiet: the same listeners
at every endpoint, every pid the groups wait on still running, no group's
periodic check due), no group is asked at all.
"""

from __future__ import annotations

import functools
import math
import time
from typing import Iterable, NamedTuple, Optional

from ..kernel import diag, discover, sockets

__all__ = ["FRESH", "Look", "Quiet", "Signs", "Wait", "difference", "listener_cookies", "live_pids", "signs"]

FRESH = 0.005  # seconds a look is used for after its first dump: an adaptive sample after a slow tick reads anew


class Signs(NamedTuple):
    """What serve compares between two looks at a group (a tuple: made for every group at every look)."""

    listeners: frozenset[int]  # cookies of the endpoint's listeners
    live_pids: frozenset[int]  # member pids that still run


def difference(settled: Optional[Signs], now: Signs) -> Optional[str]:
    """Why the group needs a reconcile (a phrase for the log), or None when
    nothing changed since `settled` (None: never reconciled)."""
    if settled is None:
        return "first look"
    if now.listeners == settled.listeners and settled.live_pids <= now.live_pids:
        return None  # what nearly every look finds, for every group: said at once
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


@functools.lru_cache(maxsize=4096)
def _wire(key: sockets.EndpointKey) -> diag.WireEndpoint:
    return diag.wire_endpoint(sockets.proto_number(key.proto), key.family, key.addr, key.port)


class Look:
    """What every group's look at one moment (a tick of serve) reads, each part
    read once, when first asked for: the listeners of every endpoint of a
    protocol and family (one dump), the pids that run, and who serves each
    listener (one discover(), for the periodic check)."""

    def __init__(self, ports: Optional[frozenset[int]] = None):
        self.ports = ports                  # the only ports its dumps read (None: every port)
        self.taken: Optional[float] = None  # when the first dump was read (monotonic)
        self._dumps: dict[tuple[int, int], diag.ListenerDump] = {}
        self._alive: dict[int, bool] = {}
        self._served: dict[str, dict[sockets.EndpointKey, discover.Endpoint]] = {}  # proto -> its endpoints
        self._identities: dict[int, discover.Identity] = {}

    def queues(self, key: sockets.EndpointKey) -> dict[int, int]:
        """cookie -> queue (TCP: its accept queue; UDP: bytes) of every listener of endpoint `key`."""
        wire = _wire(key)
        return self.dump(wire[:2]).by_endpoint().get(wire, {})

    def dump(self, kind: tuple[int, int]) -> diag.ListenerDump:
        """The dump of every listener of a (proto, family), read when first asked for."""
        dump = self._dumps.get(kind)
        if dump is None:
            if self.taken is None:
                self.taken = time.monotonic()
            dump = self._dumps[kind] = diag.ListenerDump(*kind, ports=self.ports)
        return dump

    def fresh(self, now: float) -> bool:
        """Whether the look still tells how things are at `now` (its first dump is at most FRESH old)."""
        return self.taken is None or now - self.taken <= FRESH

    def listeners(self, key: sockets.EndpointKey) -> frozenset[int]:
        """Cookies of the listeners of endpoint `key`."""
        return frozenset(self.queues(key))

    def live_pids(self, pids: Iterable[int]) -> frozenset[int]:
        """The pids (> 0) of `pids` that still exist, each asked of the kernel once per look."""
        alive = self._alive
        out = []
        for p in pids:
            if p > 0:
                known = alive.get(p)
                if known is None:
                    known = alive[p] = sockets.process_exists(p)
                if known:
                    out.append(p)
        return frozenset(out)

    def signs(self, key: sockets.EndpointKey, member_pids: Iterable[int]) -> Signs:
        return Signs(self.listeners(key), self.live_pids(member_pids))

    def served(self, key: sockets.EndpointKey) -> Optional[discover.Endpoint]:
        """Endpoint `key` with its listeners and the process serving each (None: no listener), from
        one discover() of every port of its protocol, made for the first group that asks."""
        found = self._served.get(key.proto)
        if found is None:
            found = self._served[key.proto] = {
                ep.key: ep for ep in discover.discover(proto=key.proto, probe_reuseport=False)}
        return found.get(key)

    def identity(self, pid: int) -> discover.Identity:
        """discover.identity(pid), read once per look."""
        found = self._identities.get(pid)
        if found is None:
            found = self._identities[pid] = discover.identity(pid)
        return found


class Wait(NamedTuple):
    """What would make one group's keeper do anything at a look (but a reread of the file)."""

    key: Optional[sockets.EndpointKey]  # a change of this endpoint's listeners (None: none watched)
    pids: frozenset[int]                # the exit of one of these
    until: float                        # this moment coming (monotonic; -inf: the next look)


class Quiet(NamedTuple):
    """What every group waits for, as one look found it: a later look that finds
    the same (holds()) has nothing for any group, whatever their number."""

    listeners: dict[tuple[int, int], bytes]  # per (proto, family) watched: its dump's fingerprint
    pids: frozenset[int]
    until: float

    @classmethod
    def of(cls, look: Look, waits: Iterable[Wait]) -> "Quiet":
        """The quiet of `waits`, the keepers' answers right after a look at every one of them with `look`."""
        waits = list(waits)
        kinds = {_wire(w.key)[:2] for w in waits if w.key is not None}
        return cls({kind: look.dump(kind).fingerprint() for kind in kinds},
                   frozenset().union(*(w.pids for w in waits)), min((w.until for w in waits), default=math.inf))

    def holds(self, look: Look, now: float) -> bool:
        """Whether `look`, at `now`, finds what every group waits for unchanged: the same
        listeners in the same order (the same fingerprints) and every pid running."""
        return (now < self.until and look.live_pids(self.pids) == self.pids
                and all(look.dump(kind).fingerprint() == seen for kind, seen in self.listeners.items()))


def listener_cookies(key: sockets.EndpointKey) -> frozenset[int]:
    """Cookies of the listeners of one endpoint (a wildcard group's endpoint is the wildcard)."""
    return Look().listeners(key)


def live_pids(pids: Iterable[int]) -> frozenset[int]:
    """The pids (> 0) of `pids` that still exist."""
    return Look().live_pids(pids)


def signs(key: sockets.EndpointKey, member_pids: Iterable[int]) -> Signs:
    return Look().signs(key, member_pids)
