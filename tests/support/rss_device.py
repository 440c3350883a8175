"""A synthetic NIC description for RSS mode, where no real RSS NIC is at hand:
the pin tests and the data-path benchmark publish it as `rpctl pin rss --dev`
would publish what the device reader found."""

from __future__ import annotations

import random
from typing import Iterable, Mapping

from rpctl.controller.kernel import rss

# The key of Microsoft's RSS verification suite (tests/unit/test_toeplitz.py
# checks our hash against its published values).
MS_KEY = bytes.fromhex(
    "6d5a56da255b0ec24167253d43a38fb0d0ca2bcbae7b30b477cb2da38030f20c6a42b73bbeac01fa"
)

# Queues 0 and 2 interrupt CPU 0, queue 1 CPU 1, queue 3 may interrupt either
# (so no member can be said to serve it).
MIXED_QUEUES = ({0}, {1}, {0}, {0, 1})


def synthetic_device(fields: Mapping[str, int], queue_cpus: Iterable[Iterable[int]] = MIXED_QUEUES,
                     seed: int = 11) -> rss.RssInfo:
    """A NIC with one receive queue per entry of `queue_cpus` (the CPUs its
    interrupt may run on), a shuffled 128-entry indirection table and the
    hash fields `fields` ({"tcp4": rss.RXH_ADDRS | rss.RXH_PORTS, ...})."""
    queue_cpus = [frozenset(c) for c in queue_cpus]
    n = len(queue_cpus)
    rng = random.Random(seed)
    indir = [i % n for i in range(128)]
    rng.shuffle(indir)
    irqs = {q: rss.Irq(100 + q, f"synth-rx-{q}", cpus, frozenset()) for q, cpus in enumerate(queue_cpus)}
    return rss.RssInfo("synth0", rx_queues=n, queues_from="synthetic", indir=indir, key=MS_KEY,
                       hfunc="toeplitz", fields=dict(fields), irqs=irqs)
