"""Which members of an adaptive group to throttle, from their queue depths (pure).

`rpctl serve` samples every live member's queue (sock_diag's idiag_rqueue:
TCP, the accept queue in connections; UDP, the receive queue in bytes of
memory its datagrams hold) every `interval_ms` and feeds the depths to
Throttle.update().  The rules are the same in either unit: only the
threshold (`queue`) and the words of a reason (`unit`) differ.

A member whose queue builds while
another member's stays low is throttled: the program skips it like a gone
socket, and its share spreads over the others in proportion to their
weights.  It is released when its queue has drained (hysteresis: throttled
at `queue`, released at `release`, so a member near the threshold does not
flap).

Two rules keep the group serving whatever the samples say:
- never every member, and only against one with room: a member is
  throttled when its queue reached `queue` while another member, not
  throttled, has at most half of that (or a quarter of this member's
  queue: on a busy machine every queue may sit above half the threshold),
  and stays throttled while another has clearly less (under the threshold,
  or under half this member's queue); when all are about equally loaded,
  nobody is (the plain weights spread the load as well as anything);
- a lease: what serve publishes carries an expiry (`lease_ms` after the
  sample); the program ignores a throttle whose lease ran out, so a serve
  that died (SIGKILL) leaves the plain weights behind by itself.

The state is keyed by member index (the socket array's); a member that is
no longer sampled (gone, drained, weight 0) is forgotten.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

__all__ = ["BYTES", "DEFAULT_INTERVAL_MS", "DEFAULT_QUEUE", "DEFAULT_QUEUE_BYTES", "LEASE_MS", "MIN_QUEUE_BYTES",
           "Change", "Reason", "Settings", "Throttle", "Verdict"]

DEFAULT_QUEUE = 8         # queued connections that throttle a TCP member
# Bytes queued (the datagrams' memory, truesize: a small datagram holds about
# 1 KiB) that throttle a UDP member.  Under a third of Linux's default receive
# buffer (net.core.rmem_default, 208 KiB), which caps the queue: a threshold
# above the buffer would never be reached, the member dropping datagrams instead.
DEFAULT_QUEUE_BYTES = 64 * 1024
MIN_QUEUE_BYTES = 4096    # under this, one datagram of a busy worker would throttle it
BYTES = " bytes"          # Settings.unit of UDP groups
DEFAULT_INTERVAL_MS = 25  # between two samples: a building queue is seen within ~2 of them
LEASE_MS = 500            # a published throttle outlives serve by at most this


@dataclass(frozen=True)
class Settings:
    queue: int = DEFAULT_QUEUE
    interval_ms: int = DEFAULT_INTERVAL_MS
    lease_ms: int = LEASE_MS
    unit: str = ""  # what a depth counts, for reasons: "" (connections) or " bytes" (UDP)

    @property
    def release(self) -> int:
        """Depth at or under which a throttled member is released (and a member counts as calm)."""
        return self.queue // 4


class Reason(NamedTuple):
    """Why a member is throttled: its queue and the others' deepest, when it was throttled."""

    queue: int
    others: int
    unit: str = ""  # Settings.unit

    def __str__(self) -> str:
        return f"queue {self.queue}{self.unit}, others <= {self.others}{self.unit}"


@dataclass(frozen=True)
class Change:
    """A member throttled or released at one update, with why (for logs, events and status)."""

    index: int
    throttled: bool
    reason: str


@dataclass(frozen=True)
class Verdict:
    """What to publish after an update: the throttled members, the lease's end, and what changed."""

    throttled: Mapping[int, Reason]  # member index -> why
    lease_until_ns: int            # CLOCK_MONOTONIC (the program's bpf_ktime_get_ns); 0 when nobody is throttled
    changes: tuple[Change, ...] = ()


@dataclass
class Throttle:
    settings: Settings = field(default_factory=Settings)
    _throttled: dict[int, Reason] = field(default_factory=dict)

    @property
    def throttled(self) -> Mapping[int, Reason]:
        return dict(self._throttled)

    def update(self, depths: Mapping[int, int], now_ns: int) -> Verdict:
        """Take one sample (member index -> queue depth) and say who is throttled now."""
        s = self.settings
        before = dict(self._throttled)
        chosen: set[int] = set()
        # Deepest first: each is judged against the members still taking work.
        for index in sorted(depths, key=lambda i: -depths[i]):
            depth = depths[index]
            others = [d for i, d in depths.items() if i != index and i not in chosen]
            if not others:
                break  # never every member
            room = min(others)
            if index in before:
                # Kept until its queue drained, while another member has
                # clearly less (hysteresis on the others too).
                keep = depth > s.release and room < max(s.queue, depth // 2)
            else:
                # A new throttle: its queue reached the threshold while another
                # member's is at half of it, or at a quarter of this one's (a
                # busy machine may keep every queue above half the threshold).
                keep = depth >= s.queue and room <= max(s.queue // 2, depth // 4)
            if keep:
                chosen.add(index)
        serving = [d for i, d in depths.items() if i not in chosen]
        deepest = max(serving) if serving else 0
        after = {i: before.get(i, Reason(depths[i], deepest, s.unit)) for i in sorted(chosen)}
        self._throttled = after
        changes = [Change(i, True, str(r)) for i, r in after.items() if i not in before]
        changes += [Change(i, False, _release_reason(depths.get(i), s)) for i in sorted(before)
                    if i not in after]
        lease = now_ns + s.lease_ms * 1_000_000 if after else 0
        return Verdict(after, lease, tuple(changes))


def _release_reason(depth: int | None, s: Settings) -> str:
    if depth is None:
        return "no longer a live member"
    if depth > s.release:
        return f"queue {depth}{s.unit}, every member loaded"
    return f"queue {depth}{s.unit}, drained"
