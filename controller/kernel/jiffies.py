"""The kernel's tick counter (jiffies) and its rate (HZ), read from user space.

The steering program stamps the flows of its flow table with
bpf_jiffies64(), which the verifier turns into one load: the clock helper
it replaced (bpf_ktime_get_coarse_ns) cost about 35 ns on every datagram
of a known flow (docs/decisions/0010).  User space needs that clock to
tell a live flow from an idle one, and HZ to turn a group's idle timeout
into ticks when it creates the group.  The kernel shows jiffies only in
/proc/timer_list (root), and HZ only in its build configuration; without
one, HZ is measured from /proc/timer_list over a fraction of a second.
"""

from __future__ import annotations

import os
import re
import time

from ..contract.errors import Unsupported

TIMER_LIST = "/proc/timer_list"
CONFIG_FILES = ("/boot/config-{release}", "/proc/config.gz")

# The rates Linux can be built with (kernel/Kconfig.hz); a measurement is
# rounded to the nearest.
KNOWN_HZ = (100, 250, 300, 1000)
MAX_HZ = 10_000  # a configuration past it is damaged
MEASURE_S = 0.2

_hz: int | None = None


def parse_jiffies(text: str) -> int | None:
    """The first "jiffies: N" of the text of /proc/timer_list, in the 32 bits the flow table keeps; None
    when there is none."""
    m = re.search(r"^jiffies:\s*([0-9]{1,20})\s*$", text, re.M | re.A)
    return int(m.group(1)) & 0xFFFFFFFF if m else None


def now() -> int:
    """The kernel's jiffies now, in the 32 bits the flow table keeps."""
    try:
        # Line by line, to the first jiffies line: the kernel writes the rest (every CPU's
        # timers) only when it is read.
        with open(TIMER_LIST, "rb") as f:
            line = next((raw for raw in f if raw.startswith(b"jiffies:")), b"")
    except OSError as e:
        raise Unsupported(f"read the kernel's clock from {TIMER_LIST}: {e.strerror}") from None
    jiffies = parse_jiffies(line.decode("ascii", "replace"))
    if jiffies is None:
        raise Unsupported(f"{TIMER_LIST} shows no jiffies line")
    return jiffies


def config_hz(text: str) -> int | None:
    """CONFIG_HZ of a kernel build configuration, or None (also for a rate no kernel ticks at)."""
    m = re.search(r"^CONFIG_HZ=([0-9]{1,6})$", text, re.M | re.A)
    return int(m.group(1)) if m and 0 < int(m.group(1)) <= MAX_HZ else None


def hz_of_config(raw: bytes, compressed: bool) -> int | None:
    """config_hz() of the bytes of a build configuration file (gzip'ed: /proc/config.gz); None
    when they do not read."""
    if compressed:
        import gzip  # here, not at the top: a reader of the flow table's clock needs no decompressor
        import zlib

        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error):
            return None
    return config_hz(raw.decode("utf-8", "replace"))


def nearest_hz(ticks: int, seconds: float) -> int:
    """The rate of KNOWN_HZ nearest to `ticks` counted over `seconds`."""
    rate = ticks / seconds
    return min(KNOWN_HZ, key=lambda hz: abs(hz - rate))


def hz_from_config() -> int | None:
    """CONFIG_HZ of the running kernel's build configuration, or None when it ships none."""
    for pattern in CONFIG_FILES:
        path = pattern.format(release=os.uname().release)
        try:
            with open(path, "rb") as f:
                hz = hz_of_config(f.read(), path.endswith(".gz"))
        except OSError:
            continue
        if hz:
            return hz
    return None


def hz_measured() -> int:
    """The kernel's HZ measured from /proc/timer_list over MEASURE_S (for kernels that do
    not ship their configuration)."""
    t0, j0 = time.monotonic(), now()
    time.sleep(MEASURE_S)
    t1, j1 = time.monotonic(), now()
    return nearest_hz((j1 - j0) & 0xFFFFFFFF, t1 - t0)


def hz() -> int:
    """The kernel's HZ: from its build configuration, else measured (once per process)."""
    global _hz
    if _hz is None:
        _hz = hz_from_config() or hz_measured()
    return _hz


def ticks(seconds: float, rate: int) -> int:
    """`seconds` in ticks of `rate` per second, rounded up: a flow is never
    forgotten before its idle timeout."""
    return max(1, -(-round(seconds * 1_000_000) * rate // 1_000_000))
