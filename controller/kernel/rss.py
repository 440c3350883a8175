"""What a network device says about its RSS: queues, indirection table, hash, interrupts.

read_device() asks the driver through the SIOCETHTOOL ioctl (the same
calls `ethtool -l/-x/-n` make) and reads /proc/interrupts and
/proc/irq/N/ for the chain receive queue -> IRQ -> CPU.  It records what
the driver would not say instead of failing, so that `pin rss --explain`
can show a device without RSS; steering_flags() then decides, from that
record alone, whether the program can reproduce the NIC's choice of queue.
Tests feed steering_flags() and the pinning code a synthetic RssInfo: the
same path the reader fills.

The queue of a packet is indirection[hash % table size], where hash is the
NIC's Toeplitz hash under the device's key (see controller/tables/toeplitz.py).
The program recomputes it, so rpctl refuses a device whose hash it cannot
recompute: another hash function, a transformed input, or hashed fields
other than addresses (+ ports).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import functools
import os
import re
import socket
import struct
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

from ..contract import abi
from ..contract.errors import InvalidInput, NotFound, PermissionDenied, RpctlError
from ..contract.refs import Call, Param
from ..tables.pin_table import parse_cpus
from .proc_files import read_text

__all__ = [
    "FLOWS",
    "Ethtool",
    "Irq",
    "NotAnswered",
    "RssInfo",
    "ask_driver",
    "fields_text",
    "links_of",
    "parse_interrupts",
    "pin_rss_what",
    "queue_irqs",
    "read_device",
    "rps_set",
    "rss_flags",
    "steering_flags",
]

SIOCETHTOOL = 0x8946
ETHTOOL_GRXFH = 0x29
ETHTOOL_GRXRINGS = 0x2D
ETHTOOL_GCHANNELS = 0x3C
ETHTOOL_GRSSH = 0x46

# ETH_RSS_HASH_* bits of ethtool_rxfh.hfunc: bit numbers of the kernel's
# ETH_RSS_HASH_{TOP,XOR,CRC32}_BIT (include/linux/ethtool.h; the uapi header
# does not carry them).
HASH_FUNCTIONS = {1 << 0: "toeplitz", 1 << 1: "xor", 1 << 2: "crc32"}

# Flow types of ETHTOOL_GRXFH, by the name `ethtool -n DEV rx-flow-hash` uses.
FLOWS = {"tcp4": 0x01, "udp4": 0x02, "tcp6": 0x05, "udp6": 0x06}

RXH_IP_SRC = 1 << 4
RXH_IP_DST = 1 << 5
RXH_L4_B_0_1 = 1 << 6
RXH_L4_B_2_3 = 1 << 7
RXH_ADDRS = RXH_IP_SRC | RXH_IP_DST
RXH_PORTS = RXH_L4_B_0_1 | RXH_L4_B_2_3
_RXH_NAMES = ((1 << 1, "L2 dst"), (1 << 2, "VLAN"), (1 << 3, "L3 proto"), (RXH_IP_SRC, "IP src"),
              (RXH_IP_DST, "IP dst"), (RXH_L4_B_0_1, "L4 src port"), (RXH_L4_B_2_3, "L4 dst port"))

# Layouts of <linux/ethtool.h> and <linux/if.h> (tests/unit/test_rss.py holds them to the headers).
IFREQ_SIZE = 40                 # sizeof(struct ifreq); ifr_data right after the 16-byte name
RXNFC_DATA = 8                  # offsetof(struct ethtool_rxnfc, data), a __u64
CHANNELS_SIZE = 36              # sizeof(struct ethtool_channels)
CHANNELS_RX_COUNT = 20          # offsetof(struct ethtool_channels, rx_count); tx, other, combined follow
RXFH_INDIR_SIZE = 8             # offsetof(struct ethtool_rxfh, indir_size); key_size follows
RXFH_HFUNC = 16                 # offsetof(struct ethtool_rxfh, hfunc); input_xfrm is the next byte
RXFH_CONFIG = 24                # offsetof(struct ethtool_rxfh, rss_config): the table, then the key


@dataclass(frozen=True)
class Irq:
    number: int
    name: str
    cpus: frozenset[int]       # smp_affinity_list: where it may fire
    effective: frozenset[int]  # effective_affinity_list: where it does fire (empty: not known)

    @property
    def cpu(self) -> Optional[int]:
        """The one CPU this interrupt fires on, or None when that is not one CPU."""
        where = self.effective or self.cpus
        return next(iter(where)) if len(where) == 1 else None


@dataclass
class RssInfo:
    dev: str
    rx_queues: int = 0                  # 0: not known
    queues_from: str = ""               # which call said so
    indir: list[int] = field(default_factory=list)  # empty: no indirection table
    key: bytes = b""
    hfunc: str = ""                     # toeplitz, xor, crc32; "" not said
    input_xfrm: int = 0                 # non-zero: the input is transformed (symmetric-xor)
    fields: dict[str, Optional[int]] = field(default_factory=dict)  # flow -> RXH_* bits; None: not said
    irqs: dict[int, Irq] = field(default_factory=dict)              # receive queue -> its interrupt
    rps_queues: list[int] = field(default_factory=list)             # queues with RPS CPUs set
    unsupported: dict[str, str] = field(default_factory=dict)       # what the driver would not say, why

    def queue_cpus(self) -> dict[int, Optional[int]]:
        """Every queue of the indirection table -> the CPU its interrupt fires on (None: unknown)."""
        return {q: (self.irqs[q].cpu if q in self.irqs else None) for q in sorted(set(self.indir))}

    def table_share(self, queue: int) -> float:
        return self.indir.count(queue) / len(self.indir) if self.indir else 0.0

    @property
    def why_no_rss(self) -> str:
        """Why the device has no indirection table, as the driver said; "" when it has one."""
        return "" if self.indir else self.unsupported.get("indirection", "no indirection table")


def fields_text(bits: Optional[int]) -> str:
    if bits is None:
        return "not said"
    names = [name for bit, name in _RXH_NAMES if bits & bit]
    return " + ".join(names) if names else "nothing"


# The ioctl -------------------------------------------------------------------------

# What a driver may say its RSS has; past it, the answer is damaged (drivers have tables of
# up to a few thousand entries and keys of 40 or 52 bytes).
MAX_INDIR = 1 << 16
MAX_KEY = 1 << 12


class NotAnswered(Exception):
    """The driver would not say (the ioctl failed), or said what cannot be."""


# An ethtool call: fills the buffer (its command in the first u32) as the driver answers it,
# or raises NotAnswered.  read_device makes the ioctl one; tests pass a driver of their own.
Ethtool = Callable[[ctypes.Array, str], None]


def _ethtool(sock: socket.socket, dev: str, buf: ctypes.Array, what: str) -> None:
    ifr = struct.pack("16sP", dev.encode(), ctypes.addressof(buf)).ljust(IFREQ_SIZE, b"\0")
    try:
        fcntl.ioctl(sock.fileno(), SIOCETHTOOL, ifr)
    except OSError as e:
        if e.errno == errno.ENODEV:
            raise NotFound(f"no network device {dev!r} in this network namespace") from None
        if e.errno in (errno.EPERM, errno.EACCES):
            raise PermissionDenied(f"read {what} of {dev}: {e.strerror} (needs CAP_NET_ADMIN)") from None
        raise NotAnswered(f"{what}: {e.strerror}") from None


def _rxnfc(ethtool: Ethtool, cmd: int, flow_type: int, what: str) -> int:
    """data of struct ethtool_rxnfc after cmd (GRXRINGS: ring count; GRXFH: RXH_* bits)."""
    buf = ctypes.create_string_buffer(512)  # larger than struct ethtool_rxnfc, which the kernel copies
    struct.pack_into("=II", buf, 0, cmd, flow_type)
    ethtool(buf, what)
    return struct.unpack_from("=Q", buf, RXNFC_DATA)[0]


def _channels(ethtool: Ethtool) -> int:
    buf = ctypes.create_string_buffer(CHANNELS_SIZE)
    struct.pack_into("=I", buf, 0, ETHTOOL_GCHANNELS)
    ethtool(buf, "ETHTOOL_GCHANNELS")
    rx, _tx, _other, combined = struct.unpack_from("=4I", buf, CHANNELS_RX_COUNT)
    return rx + combined


def _rssh(ethtool: Ethtool) -> tuple[list[int], bytes, int, int]:
    """(indirection table, key, hfunc bits, input_xfrm) through ETHTOOL_GRSSH."""
    head = ctypes.create_string_buffer(RXFH_CONFIG)
    struct.pack_into("=I", head, 0, ETHTOOL_GRSSH)
    ethtool(head, "ETHTOOL_GRSSH")
    indir_size, key_size = struct.unpack_from("=II", head, RXFH_INDIR_SIZE)
    if not indir_size:
        raise NotAnswered("ETHTOOL_GRSSH: the driver has no indirection table")
    if indir_size > MAX_INDIR or key_size > MAX_KEY:
        raise NotAnswered(f"ETHTOOL_GRSSH: the driver says its table has {indir_size} entries and its key "
                          f"{key_size} bytes (at most {MAX_INDIR} and {MAX_KEY} make sense)")
    # Second call with the sizes: the kernel fills rss_config[] with the
    # table (u32 each), then the key, and sets hfunc and input_xfrm.
    buf = ctypes.create_string_buffer(RXFH_CONFIG + 4 * indir_size + key_size)
    struct.pack_into("=I", buf, 0, ETHTOOL_GRSSH)
    struct.pack_into("=II", buf, RXFH_INDIR_SIZE, indir_size, key_size)
    ethtool(buf, "ETHTOOL_GRSSH")
    hfunc, input_xfrm = struct.unpack_from("=BB", buf, RXFH_HFUNC)
    indir = list(struct.unpack_from(f"={indir_size}I", buf, RXFH_CONFIG))
    key_at = RXFH_CONFIG + 4 * indir_size
    key = bytes(buf.raw[key_at:key_at + key_size])
    return indir, key, hfunc, input_xfrm


def ask_driver(info: RssInfo, ethtool: Ethtool, netlink_queues: int) -> None:
    """Fill `info` with what the driver says through `ethtool` (receive queues, indirection
    table, key, hash, hashed fields), and record what it would not say."""
    try:
        info.rx_queues, info.queues_from = _rxnfc(ethtool, ETHTOOL_GRXRINGS, 0, "ETHTOOL_GRXRINGS"), "GRXRINGS"
    except NotAnswered as e:
        info.unsupported["rings"] = str(e)
        try:
            info.rx_queues, info.queues_from = _channels(ethtool), "GCHANNELS"
        except NotAnswered as e2:
            info.unsupported["channels"] = str(e2)
            info.rx_queues, info.queues_from = netlink_queues, "netlink"
    try:
        info.indir, info.key, hfunc, info.input_xfrm = _rssh(ethtool)
        info.hfunc = next((n for bit, n in HASH_FUNCTIONS.items() if hfunc == bit), "")
    except NotAnswered as e:
        info.unsupported["indirection"] = str(e)
    for flow, code in FLOWS.items():
        try:
            info.fields[flow] = _rxnfc(ethtool, ETHTOOL_GRXFH, code, "ETHTOOL_GRXFH")
        except NotAnswered as e:
            info.fields[flow] = None
            info.unsupported.setdefault("fields", str(e))


# Interrupts --------------------------------------------------------------------------


def parse_interrupts(text: str) -> dict[int, str]:
    """/proc/interrupts -> {IRQ number: its action names} (numbered lines only)."""
    lines = text.splitlines()
    if not lines:
        return {}
    ncpus = len(lines[0].split())
    out = {}
    for line in lines[1:]:
        head, sep, rest = line.partition(":")
        if not sep or not head.strip().isascii() or not head.strip().isdigit():
            continue
        words = rest.split()
        # Counts per CPU, then the chip, the hardware IRQ and its trigger,
        # then the action names ("eth0-TxRx-3", or "a, b" when shared).
        tail = words[ncpus:]
        out[int(head)] = " ".join(tail[2:]) if len(tail) > 2 else (tail[-1] if tail else "")
    return out


# "eth0-TxRx-3", "eth0-rx-3", "virtio2-input.3", "mlx5_comp3@pci:...", "ice-eth0-TxRx-3".
_QUEUE_IN_NAME = re.compile(r"(?:txrx|rxtx|combined|rx|input|comp|fp|queue)[-_.]?(\d+)\b", re.IGNORECASE)


def queue_irqs(dev: str, names: dict[int, str], ids: set[str], msi: set[int]) -> dict[int, int]:
    """{receive queue: IRQ} from interrupt names.

    An interrupt is the device's when its name holds one of `ids` (the
    interface name, its bus address, its virtio name) or the device owns
    it (`msi`, from sysfs); its queue is the number after rx/TxRx/input/...
    in the name, or after "DEV-".  The lowest IRQ wins a queue named twice.
    """
    own = re.compile(rf"(?:^|\W){re.escape(dev)}-(\d+)$")
    out: dict[int, int] = {}
    for irq in sorted(names):
        name = names[irq]
        if irq not in msi and not any(i and i in name for i in ids):
            continue
        m = _QUEUE_IN_NAME.search(name) or own.search(name)
        if m:
            out.setdefault(int(m.group(1)), irq)
    return out


def _read(path: str) -> Optional[str]:
    try:
        return read_text(path)
    except OSError:
        return None


def _irq(number: int, name: str) -> Irq:
    def cpus(file: str) -> frozenset[int]:
        text = _read(f"/proc/irq/{number}/{file}")
        try:
            return parse_cpus(text) if text else frozenset()
        except ValueError:
            return frozenset()

    return Irq(number, name, cpus("smp_affinity_list"), cpus("effective_affinity_list"))


def _device_ids(dev: str) -> tuple[set[str], set[int]]:
    """Names that identify the device in /proc/interrupts, and the MSI IRQs sysfs gives it."""
    ids = {dev}
    msi: set[int] = set()
    path = os.path.realpath(f"/sys/class/net/{dev}/device")
    if os.path.isdir(path):
        dirs = [path]
        if os.path.basename(path).startswith("virtio"):
            # virtio_net names its interrupts virtioN-input.Q, owned by the PCI function above.
            dirs.append(os.path.dirname(path))
        for d in dirs:
            ids.add(os.path.basename(d))
            try:
                msi.update(int(x) for x in os.listdir(os.path.join(d, "msi_irqs")) if x.isdigit())
            except OSError:
                pass
    return ids, msi


def _rps_queues(dev: str) -> list[int]:
    out = []
    base = f"/sys/class/net/{dev}/queues"
    try:
        entries = os.listdir(base)
    except OSError:
        return out
    for entry in entries:
        if entry.startswith("rx-") and entry[3:].isascii() and entry[3:].isdigit():
            if rps_set(_read(os.path.join(base, entry, "rps_cpus")) or ""):
                out.append(int(entry[3:]))
    return sorted(out)


def rps_set(text: str) -> bool:
    """Whether the text of a queue's rps_cpus (a hex CPU mask, 32 bits a word, comma between
    words: "00000000,00000003") names any CPU."""
    mask = text.strip().replace(",", "")
    return bool(re.fullmatch(r"[0-9a-fA-F]+", mask)) and int(mask, 16) != 0


def _netlink_links() -> dict[str, tuple[int, int]]:
    """{name: (ifindex, receive queues)} of this network namespace's devices, from
    rtnetlink (pyroute2).  Unlike /sys/class/net, which shows the devices of the
    namespace sysfs was mounted in, netlink always answers for the caller's own.
    Imported here: only `pin rss` pays for pyroute2."""
    from pyroute2 import IPRoute

    def dump():
        with IPRoute() as ipr:
            yield from ipr.get_links()

    return links_of(dump())


# What pyroute2 raises decoding a reply it cannot read.
_UNREADABLE = (struct.error, KeyError, IndexError, ValueError, TypeError, AttributeError)


def links_of(replies: Iterable) -> dict[str, tuple[int, int]]:
    """{name: (ifindex, receive queues)} of RTM_NEWLINK replies as pyroute2 decodes them
    (`replies`: decoded as they are iterated); a reply without a name or an index is not a
    device, and one pyroute2 cannot decode is RpctlError."""
    out: dict[str, tuple[int, int]] = {}
    try:
        for link in replies:
            name, index, queues = link.get_attr("IFLA_IFNAME"), link.get("index"), link.get_attr("IFLA_NUM_RX_QUEUES")
            if isinstance(name, str) and isinstance(index, int) and index > 0:
                out[name] = (index, queues if isinstance(queues, int) and queues > 0 else 0)
    except _UNREADABLE as e:
        raise RpctlError(f"read the network devices through rtnetlink: a reply rpctl cannot read "
                         f"({type(e).__name__}: {e})") from None
    return out


def _sysfs_links() -> dict[str, int]:
    """{name: ifindex} as /sys/class/net shows them."""
    out = {}
    try:
        names = os.listdir("/sys/class/net")
    except OSError:
        return out
    for name in names:
        text = _read(f"/sys/class/net/{name}/ifindex")
        if text and text.strip().isdigit():
            out[name] = int(text)
    return out


STALE_SYSFS = ("/sys/class/net shows another network namespace's devices (sysfs was mounted there): "
               "interrupts and RPS of the device unknown; run rpctl where sysfs belongs to this "
               "namespace (`ip netns exec` mounts one)")


def read_device(dev: str) -> RssInfo:
    """What `dev` (in this network namespace) says about its RSS."""
    if not dev or len(dev.encode()) >= abi.RP_IFNAME_LEN or "/" in dev or dev.strip() != dev:
        raise InvalidInput(f"pin rss: {dev!r} is not a network device name")
    info = RssInfo(dev)
    links = _netlink_links()
    if dev not in links:
        raise NotFound(f"no network device {dev!r} in this network namespace")
    sysfs_ours = _sysfs_links() == {name: index for name, (index, _) in links.items()}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        ask_driver(info, functools.partial(_ethtool, sock, dev), links[dev][1])
    if not sysfs_ours:
        # The interrupts are matched by the device's name and its sysfs folder:
        # another namespace's device of the same name would answer for it.
        info.unsupported["sysfs"] = STALE_SYSFS
        return info
    ids, msi = _device_ids(dev)
    names = parse_interrupts(_read("/proc/interrupts") or "")
    info.irqs = {q: _irq(irq, names[irq]) for q, irq in queue_irqs(dev, names, ids, msi).items()}
    info.rps_queues = _rps_queues(dev)
    return info


# Can the program reproduce the NIC's choice? ----------------------------------------------


def _version_flags(info: RssInfo, flow: str, version: int) -> tuple[int, Optional[str]]:
    """rp_rss_flag bits for one IP version, or 0 and why not."""
    bits = info.fields.get(flow)
    if bits is None:
        return 0, f"the device does not say which fields it hashes for {flow}"
    if bits & ~(RXH_ADDRS | RXH_PORTS) or bits & RXH_ADDRS != RXH_ADDRS or bits & RXH_PORTS not in (0, RXH_PORTS):
        return 0, (f"the device hashes {flow} over {fields_text(bits)}; rpctl recomputes a hash over "
                   "IP src + IP dst (+ both ports) only")
    ports = bits & RXH_PORTS == RXH_PORTS
    need = (12 if version == 4 else 36) if ports else (8 if version == 4 else 32)
    if len(info.key) < need + 4:
        return 0, f"the {len(info.key)}-byte key is too short for {flow}"
    if version == 4:
        return abi.RP_RSS_IPV4 | (abi.RP_RSS_IPV4_PORTS if ports else 0), None
    return abi.RP_RSS_IPV6 | (abi.RP_RSS_IPV6_PORTS if ports else 0), None


def pin_rss_what(dev: str) -> tuple[object, ...]:
    """The head of a refusal of `pin rss` on `dev`: message parts saying what was being done."""
    return ("pin rss ", Param("dev", "read_device"), f" {dev}")


def rss_flags(info: RssInfo, proto: str, family: int) -> tuple[int, str]:
    """(abi.RP_RSS_* flags, "") for a group of `proto` ("tcp"/"udp") and `family`,
    or (0, why not) when the program could not tell a packet's queue."""
    if not info.indir:
        return 0, (f"the device has no RSS ({info.why_no_rss}): it does not spread flows over receive queues "
                   "by hash, so there is no queue to pin")
    if info.hfunc != "toeplitz":
        said = f"with {info.hfunc}" if info.hfunc else "with a function it does not name"
        return 0, (f"the NIC hashes {said}, not Toeplitz: rpctl cannot recompute its hash, "
                   "so it cannot tell a packet's queue")
    if info.input_xfrm:
        return 0, (f"the NIC transforms the hash input (input_xfrm {info.input_xfrm:#x}, e.g. symmetric-xor): "
                   "rpctl cannot recompute its hash")
    if len(info.indir) > abi.RP_RSS_MAX_INDIR:
        return 0, f"its indirection table has {len(info.indir)} entries; rpctl takes at most {abi.RP_RSS_MAX_INDIR}"
    if max(info.indir) >= abi.RP_MAX_PINS:
        return 0, f"queue {max(info.indir)} is past the {abi.RP_MAX_PINS} queues a pin table covers"
    v4, why4 = _version_flags(info, f"{proto}4", 4)
    v6, why6 = _version_flags(info, f"{proto}6", 6)
    # An IPv6 group also takes IPv4 (mapped) unless it is v6-only: what it
    # cannot hash goes to the weighted table and is counted (rss_unhashed).
    if family == socket.AF_INET and not v4:
        return 0, why4 or ""
    if family == socket.AF_INET6 and not v6:
        return 0, why6 or ""
    return v4 | v6, ""


def steering_flags(info: RssInfo, proto: str, family: int) -> int:
    """rss_flags(), or InvalidInput saying why the program could not tell a packet's queue."""
    flags, why = rss_flags(info, proto, family)
    if why:
        # Without RSS there is still the CPU that handles a connection.
        cpu = () if info.indir else ("; ", Call("pin_cpu"), " pins by the CPU that handles a connection")
        raise InvalidInput(*pin_rss_what(info.dev), ": ", why, *cpu)
    return flags
