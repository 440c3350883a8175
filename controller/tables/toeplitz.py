"""The Toeplitz hash NICs use for RSS, and the receive queue it picks.  Pure.

In RSS mode the program needs the queue the NIC put a packet on.  The hash
the kernel hands a reuseport program (md->hash) is the kernel's own jhash of
the 4-tuple, seeded at boot: it has nothing to do with the NIC's.  So the
program recomputes the NIC's hash from the packet's addresses and ports
with the device's key, and this module is the reference it is held to.

The Toeplitz hash is linear over GF(2): the hash of an input is the XOR of
the hashes of its bytes taken one at a time (each at its position, every
other byte zero).  byte_tables() precomputes those, RP_RSS_INPUT_MAX x 256
words, so that the program needs one table load per input byte instead of
a loop over 8 bits.

Input layout (Microsoft's RSS specification, which NICs follow): source
address, destination address, then source port and destination port when
the NIC hashes ports; all in network byte order, as they sit in the packet.
"""

from __future__ import annotations

import ipaddress
from typing import Sequence

__all__ = ["byte_tables", "hash_input", "hash_with_tables", "queue_of", "toeplitz"]

MASK32 = 0xFFFFFFFF


def _check_key(key: bytes, n_input: int) -> int:
    """The key as one big integer; refuses a key too short for the input."""
    if len(key) < n_input + 4:
        raise ValueError(f"a {len(key)}-byte key hashes at most {max(0, len(key) - 4)} input bytes, not {n_input}")
    return int.from_bytes(key, "big")


def toeplitz(key: bytes, data: bytes) -> int:
    """The 32-bit Toeplitz hash of `data` under `key`, bit by bit (the definition)."""
    k = _check_key(key, len(data))
    klen = 8 * len(key)
    h = 0
    for i, byte in enumerate(data):
        for b in range(8):
            if byte & (0x80 >> b):
                # The 32 key bits starting at the input bit's position.
                h ^= (k >> (klen - 32 - (8 * i + b))) & MASK32
    return h


def byte_tables(key: bytes, n_input: int) -> list[list[int]]:
    """tables[i][v]: the hash of an input whose byte i is v and every other byte 0."""
    k = _check_key(key, n_input)
    klen = 8 * len(key)
    tables = []
    for i in range(n_input):
        # windows[b]: the contribution of bit b (MSB first) of byte i.
        windows = [(k >> (klen - 32 - (8 * i + b))) & MASK32 for b in range(8)]
        row = [0] * 256
        for v in range(1, 256):
            low = v & -v  # build each entry from a smaller one: v without its lowest set bit
            row[v] = row[v ^ low] ^ windows[8 - low.bit_length()]
        tables.append(row)
    return tables


def hash_with_tables(tables: Sequence[Sequence[int]], data: bytes) -> int:
    """What the program computes: the XOR of one table entry per input byte."""
    h = 0
    for i, byte in enumerate(data):
        h ^= tables[i][byte]
    return h


def hash_input(saddr: str, daddr: str, sport: int, dport: int, ports: bool) -> bytes:
    """The bytes the NIC hashes for a flow: addresses, then ports if it hashes them."""
    src, dst = ipaddress.ip_address(saddr), ipaddress.ip_address(daddr)
    if src.version != dst.version:
        raise ValueError(f"{saddr} and {daddr} are of different IP versions")
    data = src.packed + dst.packed
    if ports:
        data += sport.to_bytes(2, "big") + dport.to_bytes(2, "big")
    return data


def queue_of(indir: Sequence[int], h: int) -> int:
    """The receive queue of hash `h`: indirection[h % table size].

    NICs index the table with the hash's low bits; for the power-of-two
    sizes every NIC uses, that is h % size.
    """
    if not indir:
        raise ValueError("empty indirection table")
    return indir[h % len(indir)]
