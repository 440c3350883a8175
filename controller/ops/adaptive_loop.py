"""The control loop of one adaptive group (`adaptive = true`), run by `rpctl serve`.

Every `adaptive_interval_ms` serve's look at the namespace (one sock_diag
dump for every group sampled at that moment, controller/ops/watch.py) gives
every live member's queue (TCP: its accept queue; UDP: its receive queue, in bytes,
against `adaptive_queue_bytes`), controller/tables/adaptive.py decides who is
throttled, and the map "throttle" gets the answer with a lease of
adaptive.LEASE_MS; the program skips a throttled member while the lease
runs, so a serve that is SIGKILLed leaves the plain weights behind within
the lease (docs/decisions/0013).  The group's maps stay open between
samples; its members are read again every MEMBERS_AGE (and after a
reconcile), and its maps opened anew when its pinned folder is another one
(the group was unloaded and made again).
"""

from __future__ import annotations

import logging
import os
import time

from ..contract import abi
from ..contract.errors import RpctlError
from ..kernel import sockets
from ..store.generation import Group
from ..store.steering import put_throttle, set_adaptive
from ..store.state import Layout
from ..tables import adaptive
from .config_spec import GroupSpec
from .watch import Look

__all__ = ["HEARTBEAT", "MEMBERS_AGE", "AdaptiveLoop", "settings_of"]

MEMBERS_AGE = 1.0  # an adaptive group's members (and whether its maps are still its pinned ones) are read this often
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

    def __init__(self, name: str, layout: Layout, key: sockets.EndpointKey):
        self.name = name
        self.layout = layout
        self.key = key                   # the group's endpoint: its members' queues are its listeners'
        self.throttle = adaptive.Throttle()
        self.group: Group | None = None
        self.folder: tuple[int, int] | None = None  # the pinned folder self.group was opened from
        self.live: dict[int, int] = {}   # member index -> socket cookie, of the live generation
        self.members: list[abi.RpMember] = []
        self.read_at = -MEMBERS_AGE
        self.next = 0.0
        self.published_empty = False     # the map says "nobody" already: only the heartbeat writes
        self.beat_at = -HEARTBEAT        # when the map was last written
        self.failed: str | None = None

    def step(self, now: float, settings: adaptive.Settings, look: Look) -> float:
        """One sample (from `look`) if it is due; returns when the next one is."""
        if now < self.next:
            return self.next
        self.throttle.settings = settings
        self.next = now + settings.interval_ms / 1000
        try:
            if now - self.read_at >= MEMBERS_AGE:
                self._read_members(now)
            g = self.group
            depths = look.queues(self.key)
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
        names = self._names() if verdict.changes else {}
        for c in verdict.changes:
            log.info("group %s: %s %s (%s)", self.name, names.get(c.index, f"index {c.index}"),
                     "throttled" if c.throttled else "released", c.reason)
        return self.next

    def _read_members(self, now: float) -> None:
        """Open the group when its pinned folder is not the one open (it may have
        been unloaded and made again), make sure its program reads the
        throttle, and list the live members."""
        folder = _folder(self.layout.group_dir(self.name))
        if self.group is None or folder is None or folder != self.folder:
            self._close_group()
            self.group = Group.open(self.name, self.layout)  # NotFound when the folder is gone
            self.folder = folder
        g = self.group
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
            self.folder = None

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


def _folder(path: str) -> tuple[int, int] | None:
    """What tells a group's pinned folder from one made after it under the same name (None: none)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino
