"""controller/kernel/jiffies.py: HZ from a build configuration or a measurement, timeouts in ticks."""

from __future__ import annotations

import pytest
from rpctl.controller.kernel import jiffies


def test_config_hz_reads_the_build_configuration():
    assert jiffies.config_hz("CONFIG_HZ_250=y\nCONFIG_HZ=250\nCONFIG_SCHED_HRTICK=y\n") == 250
    assert jiffies.config_hz("# CONFIG_HZ_1000 is not set\n") is None


@pytest.mark.parametrize(("ticks", "seconds", "hz"), [(50, 0.2, 250), (21, 0.2, 100), (58, 0.2, 300),
                                                      (203, 0.2, 1000), (61, 0.2, 300), (52, 0.21, 250)])
def test_a_measurement_is_rounded_to_a_rate_linux_can_be_built_with(ticks, seconds, hz):
    assert jiffies.nearest_hz(ticks, seconds) == hz


@pytest.mark.parametrize(("seconds", "hz", "ticks"), [(30, 250, 7500), (0.1, 250, 25), (0.101, 250, 26),
                                                      (0.001, 100, 1), (86400, 1000, 86_400_000)])
def test_timeouts_round_up_to_whole_ticks(seconds, hz, ticks):
    assert jiffies.ticks(seconds, hz) == ticks
