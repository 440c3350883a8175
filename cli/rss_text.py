"""How the command line describes a network device's RSS (the head of `pin rss --explain`).

The facts are the library's (rpctl.controller.kernel.rss.RssInfo, filled by
read_device); the sentences are the command line's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rpctl.controller.kernel.rss import fields_text
from rpctl.controller.tables.pin_table import format_cpus

if TYPE_CHECKING:
    from rpctl.controller.kernel.rss import RssInfo

__all__ = ["describe"]


def describe(info: RssInfo) -> list[str]:
    """Lines about the device as a whole."""
    if info.rx_queues:
        queues = f"{info.rx_queues} receive queue{'s' if info.rx_queues != 1 else ''}"
    else:
        queues = "receive queues unknown"
    source = info.queues_from if info.queues_from in ("netlink", "synthetic", "") else f"ETHTOOL_{info.queues_from}"
    lines = [f"device {info.dev}: {queues}" + (f" ({source})" if source else "")]
    if info.indir:
        lines.append(f"indirection table: {len(info.indir)} entries; hash {info.hfunc or 'not said'}, "
                     f"key {len(info.key)} bytes")
    else:
        lines.append(f"no RSS: {info.why_no_rss}")
    for flow, bits in info.fields.items():
        if bits is not None:
            lines.append(f"{flow} hashed over {fields_text(bits)}")
    if "sysfs" in info.unsupported:
        lines.append(info.unsupported["sysfs"])
    if info.rps_queues:
        lines.append(f"RPS is set on queues {format_cpus(info.rps_queues)}: the stack then handles their packets "
                     "on other CPUs than the interrupt's")
    return lines
