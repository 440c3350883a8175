"""The control loop of one adaptive group (`adaptive = true`), run by `rpctl serve`.

Every `adaptive_interval_ms` one sock_diag dump of the port gives every live
member's queue (TCP: its accept queue; UDP: its receive queue, in bytes,
against `adaptive_queue_bytes`), controller/tables/adaptive.py decides who is
throttled, and the map "throttle" gets the answer with a lease of
adaptive.LEASE_MS; the program skips a throttled member while the lease
runs, so a serve that is SIGKILLed leaves the plain weights behind within
the lease (docs/decisions/0013).
"""

from __future__ import annotations

import logging
import time

from ..contract import abi
from ..contract.errors import RpctlError
from ..kernel import diag
from ..store.generation import Group
from ..store.steering import put_throttle, set_adaptive
from ..store.state import Layout
from ..tables import adaptive
from .config_spec import GroupSpec

__all__ = ["HEARTBEAT", "MEMBERS_AGE", "AdaptiveLoop", "settings_of"]

MEMBERS_AGE = 1.0  # an adaptive group's members (and its open maps) are read again this often
HEARTBEAT = 0.5  # with nobody throttled, the throttle map is still written this often: readers see serve sample

log = logging.getLogger("rpctl.serve")  # serve's log: the loop runs inside serve


def settings_of(spec: GroupSpec) -> adaptive.Settings:
    """The thresholds the file gives a group, in the unit its protocol's queue is counted in."""
    if spec.listen.proto == "udp":  # its receive queue, in bytes
        return adaptive.Settings(queue=spec.adaptive_queue_bytes, interval_ms=spec.adaptive_interval_ms,
                                 unit=adaptive.BYTES)
    return adaptive.Settings(queue=spec.adaptive_queue, interval_ms=spec.adaptive_interval_ms)


class AdaptiveLoop:
    """The control loop of one adaptive group: sample, decide, publish the throttle."""

    def __init__(self, name: str, layout: Layout):
        self.name = name
        self.layout = layout
        self.throttle = adaptive.Throttle()
        self.group: Group | None = None
        self.live: dict[int, int] = {}   # member index -> socket cookie, of the live generation
        self.members: list[abi.RpMember] = []
        self.read_at = -MEMBERS_AGE
        self.next = 0.0
        self.published_empty = False     # the map says "nobody" already: only the heartbeat writes
        self.beat_at = -HEARTBEAT        # when the map was last written
        self.failed: str | None = None

    def step(self, now: float, settings: adaptive.Settings) -> float:
        """One sample if it is due; returns when the next one is."""
        if now < self.next:
            return self.next
        self.throttle.settings = settings
        self.next = now + settings.interval_ms / 1000
        try:
            if now - self.read_at >= MEMBERS_AGE:
                self._read_members(now)
            g = self.group
            ctl = g.ctl()
            depths = diag.queue_depths(ctl.proto, self.live.values(), ctl.port)
            by_index = {i: depths[c] for i, c in self.live.items() if c in depths}
            verdict = self.throttle.update(by_index, time.monotonic_ns())
            if verdict.throttled or not self.published_empty or now - self.beat_at >= HEARTBEAT:
                put_throttle(g, verdict.throttled, verdict.lease_until_ns, time.monotonic_ns())
                self.published_empty = not verdict.throttled
                self.beat_at = now
        except (RpctlError, OSError) as e:
            text = str(e)
            if text != self.failed:
                log.warning("group %s: adaptive steering cannot sample or publish: %s", self.name, e)
            self.failed = text
            self._close_group()
            self.read_at = -MEMBERS_AGE
            return self.next
        self.failed = None
        names = self._names()
        for c in verdict.changes:
            log.info("group %s: %s %s (%s)", self.name, names.get(c.index, f"index {c.index}"),
                     "throttled" if c.throttled else "released", c.reason)
        return self.next

    def _read_members(self, now: float) -> None:
        """Open the group anew (it may have been unloaded and made again), make
        sure its program reads the throttle, and list the live members."""
        self._close_group()
        g = self.group = Group.open(self.name, self.layout)
        if set_adaptive(g, True):
            log.info("group %s: adaptive steering on", self.name)
        self.members = g.members()
        self.live = {i: self.members[i].cookie for i in g.live_weights(self.members)}
        self.read_at = now

    def _names(self) -> dict[int, str]:
        return {i: self.members[i].name.decode(errors="replace") for i in self.live}

    def stale(self) -> None:
        """The group changed (a reconcile ran): read its members at the next sample."""
        self.read_at = -MEMBERS_AGE

    def _close_group(self) -> None:
        if self.group is not None:
            self.group.close()
            self.group = None

    def close(self) -> None:
        """Adaptive off (serve stops, or the file says so): nobody throttled, flag cleared."""
        try:
            with Group.open(self.name, self.layout) as g:
                put_throttle(g, {}, 0)
                if set_adaptive(g, False):
                    log.info("group %s: adaptive steering off", self.name)
        except (RpctlError, OSError) as e:
            log.warning("group %s: cannot turn adaptive steering off (its lease ends it): %s", self.name, e)
        self._close_group()
