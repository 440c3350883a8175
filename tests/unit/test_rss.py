"""controller/kernel/rss.py, the RSS device description: interrupt names, what the program can reproduce, and the
ethtool layouts the reader relies on (held to the system's headers by gcc).  No privileges."""

from __future__ import annotations

import shutil
import socket
import struct
import subprocess

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from rpctl.cli.wording import error_text
from rpctl.controller.contract import abi
from rpctl.controller.contract.errors import InvalidInput
from rpctl.controller.kernel import rss

from tests.support import hostile

KEY40 = bytes(range(1, 41))
BOTH = rss.RXH_ADDRS | rss.RXH_PORTS


def device(**kw) -> rss.RssInfo:
    fields = {"dev": "eth0", "rx_queues": 2, "indir": [0, 1] * 64, "key": KEY40, "hfunc": "toeplitz",
              "fields": {"tcp4": BOTH, "udp4": rss.RXH_ADDRS, "tcp6": BOTH, "udp6": rss.RXH_ADDRS}}
    return rss.RssInfo(**{**fields, **kw})


# Interrupts -------------------------------------------------------------------------


INTERRUPTS = """\
            CPU0       CPU1       CPU2       CPU3
  24:          1          0          0          0   IO-APIC    5-edge      ACPI:Ged
  38:          0       2933          0          0  PCI-MSIX-0000:00:03.0   1-edge      virtio2-input.0
  39:       2718          0          0          0  PCI-MSIX-0000:00:03.0   2-edge      virtio2-output.0
  40:          0          0          0          0  PCI-MSIX-0000:00:03.0   3-edge      virtio2-input.1
  50:          5          0          0          0  IR-PCI-MSI 524288-edge      eth1-TxRx-0
  51:          0          5          0          0  IR-PCI-MSI 524289-edge      eth1-TxRx-1
  52:          0          0          0          0  IR-PCI-MSI 524290-edge      eth1
  60:          1          0          0          0  IR-PCI-MSIX-0000:3b:00.0 1-edge  mlx5_comp0@pci:0000:3b:00.0
  61:          1          0          0          0  IR-PCI-MSIX-0000:3b:00.0 2-edge  mlx5_comp1@pci:0000:3b:00.0
  62:          1          0          0          0  IR-PCI-MSIX-0000:3b:00.0 0-edge  mlx5_async0@pci:0000:3b:00.0
  70:          0          0          0          0  IR-PCI-MSI 1-edge      eth2-rx-0
  71:          0          0          0          0  IR-PCI-MSI 2-edge      eth2-tx-0
  72:          0          0          0          0  IR-PCI-MSI 3-edge      eth2-3
 NMI:          0          0          0          0   Non-maskable interrupts
"""


def test_parse_interrupts_keeps_numbered_lines_and_their_names():
    names = rss.parse_interrupts(INTERRUPTS)
    assert names[38] == "virtio2-input.0" and names[50] == "eth1-TxRx-0" and names[24] == "ACPI:Ged"
    assert names[60] == "mlx5_comp0@pci:0000:3b:00.0"
    assert all(isinstance(k, int) for k in names)
    assert rss.parse_interrupts("") == {}


@pytest.mark.parametrize(
    "dev, ids, msi, queues",
    [
        ("eth0", {"eth0", "virtio2", "0000:00:03.0"}, set(), {0: 38, 1: 40}),  # virtio_net: by its virtio name
        ("eth1", {"eth1"}, set(), {0: 50, 1: 51}),                              # ixgbe/i40e style
        ("ens1", {"ens1", "0000:3b:00.0"}, set(), {0: 60, 1: 61}),              # mlx5: by its bus address
        ("eth2", {"eth2"}, set(), {0: 70, 3: 72}),                              # rx only, and DEV-N
        ("eth0", {"eth0"}, {38, 39, 40}, {0: 38, 1: 40}),                       # owned IRQs from sysfs
        ("eth9", {"eth9"}, set(), {}),
    ],
)
def test_queue_irqs(dev, ids, msi, queues):
    assert rss.queue_irqs(dev, rss.parse_interrupts(INTERRUPTS), ids, msi) == queues


def test_irq_cpu_is_known_only_when_it_is_one_cpu():
    assert rss.Irq(1, "x", frozenset({0, 1}), frozenset({1})).cpu == 1  # effective affinity says
    assert rss.Irq(1, "x", frozenset({2}), frozenset()).cpu == 2
    assert rss.Irq(1, "x", frozenset({0, 1}), frozenset()).cpu is None


def test_queue_cpus_and_table_share():
    info = device(indir=[0, 0, 0, 1], irqs={0: rss.Irq(40, "q0", frozenset({1}), frozenset())})
    assert info.queue_cpus() == {0: 1, 1: None}
    assert info.table_share(0) == 0.75 and info.table_share(5) == 0.0


# What the program can reproduce ---------------------------------------------------------


def test_steering_flags_per_protocol_and_version():
    info = device()
    v4v6 = abi.RP_RSS_IPV4 | abi.RP_RSS_IPV4_PORTS | abi.RP_RSS_IPV6 | abi.RP_RSS_IPV6_PORTS
    assert rss.steering_flags(info, "tcp", socket.AF_INET) == v4v6
    assert rss.steering_flags(info, "udp", socket.AF_INET) == abi.RP_RSS_IPV4 | abi.RP_RSS_IPV6


def test_an_ipv6_group_takes_what_it_can_of_ipv4():
    info = device(fields={"tcp4": rss.RXH_IP_DST, "tcp6": BOTH})
    assert rss.steering_flags(info, "tcp", socket.AF_INET6) == abi.RP_RSS_IPV6 | abi.RP_RSS_IPV6_PORTS


def test_a_key_too_short_for_ipv6_leaves_ipv6_out():
    info = device(key=KEY40[:20])
    assert rss.steering_flags(info, "tcp", socket.AF_INET) == abi.RP_RSS_IPV4 | abi.RP_RSS_IPV4_PORTS
    with pytest.raises(InvalidInput, match="too short for tcp6"):
        rss.steering_flags(info, "tcp", socket.AF_INET6)


@pytest.mark.parametrize(
    "change, says",
    [
        ({"indir": [], "unsupported": {"indirection": "ETHTOOL_GRSSH: Operation not supported"}},
         "the device has no RSS (ETHTOOL_GRSSH: Operation not supported)"),
        ({"hfunc": "xor"}, "hashes with xor, not Toeplitz"),
        ({"hfunc": ""}, "a function it does not name"),
        ({"input_xfrm": 1}, "transforms the hash input"),
        ({"fields": {"tcp4": None}}, "does not say which fields it hashes for tcp4"),
        ({"fields": {"tcp4": rss.RXH_ADDRS | rss.RXH_L4_B_0_1}}, "IP src + IP dst + L4 src port"),
        ({"fields": {"tcp4": BOTH | (1 << 2)}}, "VLAN"),
        ({"fields": {"tcp4": rss.RXH_IP_SRC}}, "hashes tcp4 over IP src;"),
        ({"indir": [0] * (abi.RP_RSS_MAX_INDIR + 1)}, "rpctl takes at most"),
        ({"indir": [abi.RP_MAX_PINS]}, "past the"),
    ],
)
def test_steering_refusals_say_why(change, says):
    with pytest.raises(InvalidInput) as e:
        rss.steering_flags(device(**change), "tcp", socket.AF_INET)
    line = error_text(e.value)  # as the command line words it
    assert says in line and line.startswith("pin rss --dev eth0: ")


def test_read_device_refuses_a_bad_name_before_any_call():
    for name in ("", "a/b", "x" * 16, " eth0"):
        with pytest.raises(InvalidInput):
            rss.read_device(name)


# The ethtool ABI ----------------------------------------------------------------------


def test_ethtool_layouts_match_the_system_headers(tmp_path):
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.fail("gcc is not installed: this test compiles <linux/ethtool.h> (apt-get install gcc)")
    checks = {
        "sizeof(struct ifreq)": rss.IFREQ_SIZE,
        "offsetof(struct ifreq, ifr_data)": 16,
        "offsetof(struct ethtool_rxnfc, data)": rss.RXNFC_DATA,
        "sizeof(struct ethtool_channels)": rss.CHANNELS_SIZE,
        "offsetof(struct ethtool_channels, rx_count)": rss.CHANNELS_RX_COUNT,
        "offsetof(struct ethtool_channels, combined_count)": rss.CHANNELS_RX_COUNT + 12,
        "offsetof(struct ethtool_rxfh, indir_size)": rss.RXFH_INDIR_SIZE,
        "offsetof(struct ethtool_rxfh, key_size)": rss.RXFH_INDIR_SIZE + 4,
        "offsetof(struct ethtool_rxfh, hfunc)": rss.RXFH_HFUNC,
        "offsetof(struct ethtool_rxfh, rss_config)": rss.RXFH_CONFIG,
        "sizeof(struct ethtool_rxnfc) <= 512": 1,
        "SIOCETHTOOL": rss.SIOCETHTOOL,
        "ETHTOOL_GRXFH": rss.ETHTOOL_GRXFH,
        "ETHTOOL_GRXRINGS": rss.ETHTOOL_GRXRINGS,
        "ETHTOOL_GCHANNELS": rss.ETHTOOL_GCHANNELS,
        "ETHTOOL_GRSSH": rss.ETHTOOL_GRSSH,
        "TCP_V4_FLOW": rss.FLOWS["tcp4"],
        "UDP_V4_FLOW": rss.FLOWS["udp4"],
        "TCP_V6_FLOW": rss.FLOWS["tcp6"],
        "UDP_V6_FLOW": rss.FLOWS["udp6"],
        "RXH_IP_SRC": rss.RXH_IP_SRC,
        "RXH_IP_DST": rss.RXH_IP_DST,
        "RXH_L4_B_0_1": rss.RXH_L4_B_0_1,
        "RXH_L4_B_2_3": rss.RXH_L4_B_2_3,
    }
    lines = ["#include <stdio.h>", "#include <stddef.h>", "#include <net/if.h>", "#include <linux/sockios.h>",
             "#include <linux/ethtool.h>", "int main(void)", "{"]
    lines += [f'\tprintf("%lld\\n", (long long)({expr}));' for expr in checks]
    lines += ["\treturn 0;", "}", ""]
    src, exe = tmp_path / "ethtool_check.c", tmp_path / "ethtool_check"
    src.write_text("\n".join(lines))
    proc = subprocess.run([gcc, "-Wall", "-Werror", "-o", str(exe), str(src)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    got = subprocess.run([str(exe)], capture_output=True, text=True, timeout=30, check=True).stdout.split()
    for (expr, want), value in zip(checks.items(), got):
        assert int(value) == want, f"{expr}: C says {value}, controller/kernel/rss.py says {want}"


# Hostile /proc and /sys text ------------------------------------------------------------------


@given(hostile.proc_text(INTERRUPTS))
@example("\r²:")  # found by the fuzz profile: "²".isdigit() holds, and int() refuses it
def test_any_interrupts_text_gives_numbered_names_and_queues(text):
    names = rss.parse_interrupts(text)
    assert all(isinstance(k, int) and isinstance(v, str) for k, v in names.items())
    for dev, ids in (("eth0", {"eth0", "virtio2"}), ("eth1", {"eth1"}), ("ens1", {"0000:3b:00.0"})):
        queues = rss.queue_irqs(dev, names, ids, set())
        assert all(q >= 0 and irq in names for q, irq in queues.items())


@given(hostile.proc_text("00000000,00000003\n", "0\n", "ff\n"))
def test_any_rps_cpus_text_says_whether_a_cpu_is_set(text):
    assert rss.rps_set(text) in (True, False)


def test_rps_cpus_of_a_queue():
    assert rss.rps_set("00000000,00000003\n") and not rss.rps_set("00000000,00000000\n")
    assert not rss.rps_set("") and not rss.rps_set("0x3\n") and not rss.rps_set("zz\n")


# Hostile driver answers: what the ethtool calls fill in, generated ------------------------------


class Driver:
    """A driver that answers each ethtool call with bytes drawn by the test (or refuses it)."""

    def __init__(self, draw):
        self.draw = draw

    def __call__(self, buf, what):
        if self.draw(st.integers(0, 9)) == 0:
            raise rss.NotAnswered(f"{what}: Operation not supported")
        cmd = bytes(buf.raw[:4])
        if what == "ETHTOOL_GRSSH" and not int.from_bytes(bytes(buf.raw[8:16]), "little"):
            # The first call asks the sizes: small, large, or what no driver has.
            sizes = self.draw(st.tuples(st.sampled_from([0, 1, 4, 128, 2**16, 2**16 + 1, 2**32 - 1])
                                        | st.integers(0, 2**32 - 1), st.sampled_from([0, 40, 52, 2**32 - 1])))
            struct.pack_into("=II", buf, rss.RXFH_INDIR_SIZE, *sizes)
            return
        answer = self.draw(st.binary(max_size=len(buf) - 4))
        buf[4:4 + len(answer)] = answer
        assert bytes(buf.raw[:4]) == cmd


@given(st.data())
def test_any_driver_answer_is_a_device_or_refused_in_one_line(data):
    info = rss.RssInfo("eth0")
    rss.ask_driver(info, Driver(data.draw), netlink_queues=4)
    assert len(info.indir) <= rss.MAX_INDIR and len(info.key) <= rss.MAX_KEY
    for proto in ("tcp", "udp"):
        for family in (socket.AF_INET, socket.AF_INET6):
            flags, why = rss.rss_flags(info, proto, family)
            assert flags == 0 or not why
            try:
                rss.steering_flags(info, proto, family)
            except InvalidInput as e:
                assert "\n" not in error_text(e)


# Hostile rtnetlink replies: RTM_NEWLINK messages generated and damaged ---------------------------


def newlink(index: int, name: str, queues: int) -> bytes:
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

    msg = ifinfmsg()
    msg["index"] = index
    msg["attrs"] = [("IFLA_IFNAME", name), ("IFLA_NUM_RX_QUEUES", queues), ("IFLA_MTU", 1500)]
    msg["header"].update(type=16, flags=2, sequence_number=1)
    msg.encode()
    return bytes(msg.data)


LINKS = newlink(1, "lo", 1) + newlink(2, "eth0", 4)


def parsed(data: bytes):
    """The replies pyroute2 decodes from `data`, decoded as they are iterated (as _netlink_links' dump)."""
    from pyroute2.netlink.rtnl.marshal import MarshalRtnl

    yield from MarshalRtnl().parse(data)


def test_links_of_a_dump():
    assert rss.links_of(parsed(LINKS)) == {"lo": (1, 1), "eth0": (2, 4)}


@given(hostile.mutated(LINKS) | st.lists(st.builds(newlink, st.integers(0, 2**31 - 1), hostile.text,
                                                    st.integers(0, 2**32 - 1)), max_size=3).map(b"".join))
def test_any_link_dump_gives_devices_or_is_refused_in_one_line(data):
    from rpctl.controller.contract.errors import RpctlError

    try:
        links = rss.links_of(parsed(data))
    except RpctlError as e:
        assert "\n" not in str(e)
        return
    assert all(isinstance(n, str) and i > 0 and q >= 0 for n, (i, q) in links.items())
