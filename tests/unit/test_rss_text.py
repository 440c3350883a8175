"""cli/rss_text.py: a device's RSS set-up as `pin rss --explain` writes it, from hand-made RssInfo."""

from __future__ import annotations

from rpctl.cli import rss_text
from rpctl.controller.kernel import rss


def test_describe_a_device_without_rss():
    info = rss.RssInfo("lo", rx_queues=1, queues_from="netlink", unsupported={"indirection": "not supported"},
                       rps_queues=[0, 1])
    text = "\n".join(rss_text.describe(info))
    assert "device lo: 1 receive queue (netlink)" in text and "no RSS: not supported" in text
    assert "RPS is set on queues 0-1" in text


def test_describe_says_when_sysfs_is_another_namespaces():
    info = rss.RssInfo("eth0", rx_queues=4, queues_from="GCHANNELS", unsupported={"sysfs": rss.STALE_SYSFS})
    text = "\n".join(rss_text.describe(info))
    assert "(ETHTOOL_GCHANNELS)" in text and "another network namespace's devices" in text
