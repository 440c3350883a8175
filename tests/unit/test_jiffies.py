"""controller/kernel/jiffies.py: HZ from a build configuration or a measurement, timeouts in ticks."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rpctl.controller.kernel import jiffies

from tests.support import hostile


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


TIMER_LIST = "Timer List Version: v0.10\nHRTIMER_MAX_CLOCK_BASES: 8\nnow at 1234 nsecs\n\njiffies: 4299159853\n"
CONFIG = "CONFIG_HZ_250=y\nCONFIG_HZ=250\nCONFIG_SCHED_HRTICK=y\n"


def test_jiffies_are_read_from_the_timer_list():
    assert jiffies.parse_jiffies(TIMER_LIST) == 4299159853 & 0xFFFFFFFF
    assert jiffies.parse_jiffies("  .last_jiffies   : 4299159580\n") is None


@given(hostile.proc_text(TIMER_LIST))
def test_any_timer_list_gives_32_bits_of_jiffies_or_none(text):
    found = jiffies.parse_jiffies(text)
    assert found is None or 0 <= found <= 0xFFFFFFFF


@given(st.booleans().flatmap(lambda gz: st.tuples(st.just(gz), hostile.mutated(
    __import__("gzip").compress(CONFIG.encode(), mtime=0) if gz else CONFIG.encode()))))
def test_any_build_configuration_gives_a_rate_or_none(case):
    compressed, raw = case
    hz = jiffies.hz_of_config(raw, compressed)
    assert hz is None or 0 < hz <= jiffies.MAX_HZ
