"""controller/kernel/jiffies.py on this kernel: the flow table's clock as user space reads it.

The program stamps flows with bpf_jiffies64(); status, the dashboard and the
exporter judge a flow live by jiffies read from /proc/timer_list and the
idle timeout in ticks of the kernel's HZ.  Both must be this kernel's."""

from __future__ import annotations

import time

import pytest
from rpctl.controller.kernel import jiffies

pytestmark = pytest.mark.kernel


def test_jiffies_advance_at_the_kernels_hz():
    hz = jiffies.hz()
    assert hz in jiffies.KNOWN_HZ
    t0, j0 = time.monotonic(), jiffies.now()
    time.sleep(0.5)
    t1, j1 = time.monotonic(), jiffies.now()
    rate = ((j1 - j0) & 0xFFFFFFFF) / (t1 - t0)
    assert abs(rate - hz) <= 0.1 * hz, f"jiffies advanced at {rate:.0f}/s, HZ is {hz}"


def test_the_measured_hz_is_the_configured_one():
    """The fallback for kernels that do not ship their configuration."""
    measured = jiffies.hz_measured()
    assert measured in jiffies.KNOWN_HZ
    configured = jiffies.hz_from_config()
    if configured is not None:
        assert measured == configured
