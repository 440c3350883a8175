"""The NIC's RSS hash, held to Microsoft's published verification values, and the
per-byte tables the program hashes with held to the bit-by-bit definition."""

from __future__ import annotations

import random

import pytest
from rpctl.controller.contract import abi
from rpctl.controller.tables import toeplitz

KEY = bytes.fromhex("6d5a56da255b0ec24167253d43a38fb0d0ca2bcbae7b30b477cb2da38030f20c6a42b73bbeac01fa")

# (source, source port, destination, destination port, hash of the addresses, hash with ports),
# from "Verifying the RSS Hash Calculation" (Microsoft's RSS specification).
VECTORS = [
    ("66.9.149.187", 2794, "161.142.100.80", 1766, 0x323E8FC2, 0x51CCC178),
    ("199.92.111.2", 14230, "65.69.140.83", 4739, 0xD718262A, 0xC626B0EA),
    ("24.19.198.95", 12898, "12.22.207.184", 38024, 0xD2D0A5DE, 0x5C2B394A),
    ("38.27.205.30", 48228, "209.142.163.6", 2217, 0x82989176, 0xAFC7327F),
    ("153.39.163.191", 44251, "202.188.127.2", 1303, 0x5D1809C5, 0x10E828A2),
    ("3ffe:2501:200:1fff::7", 2794, "3ffe:2501:200:3::1", 1766, 0x2CC18CD5, 0x40207D3D),
    ("3ffe:501:8::260:97ff:fe40:efab", 14230, "ff02::1", 4739, 0x0F0C461C, 0xDDE51BBF),
    ("3ffe:1900:4545:3:200:f8ff:fe21:67cf", 44251, "fe80::200:f8ff:fe21:67cf", 38024, 0x4B61E985, 0x02D1FEEF),
]


@pytest.mark.parametrize("src, sport, dst, dport, addrs_hash, ports_hash", VECTORS)
def test_published_vectors(src, sport, dst, dport, addrs_hash, ports_hash):
    tables = toeplitz.byte_tables(KEY, abi.RP_RSS_INPUT_MAX)
    for ports, expected in ((False, addrs_hash), (True, ports_hash)):
        data = toeplitz.hash_input(src, dst, sport, dport, ports)
        assert toeplitz.toeplitz(KEY, data) == expected
        assert toeplitz.hash_with_tables(tables, data) == expected


def test_tables_equal_the_definition_on_random_keys_and_inputs():
    rng = random.Random(5)
    for _ in range(20):
        key = bytes(rng.randrange(256) for _ in range(40))
        tables = toeplitz.byte_tables(key, 36)
        for n in (8, 12, 32, 36):
            data = bytes(rng.randrange(256) for _ in range(n))
            assert toeplitz.hash_with_tables(tables, data) == toeplitz.toeplitz(key, data)


def test_a_zero_byte_adds_nothing():
    # Why the program may hash a zero-filled tail (ports the NIC does not hash).
    tables = toeplitz.byte_tables(KEY, 36)
    assert all(row[0] == 0 for row in tables)


def test_input_layout():
    assert toeplitz.hash_input("1.2.3.4", "5.6.7.8", 0x1122, 0x3344, ports=True) == bytes(
        [1, 2, 3, 4, 5, 6, 7, 8, 0x11, 0x22, 0x33, 0x44]
    )
    assert len(toeplitz.hash_input("::1", "::2", 1, 2, ports=False)) == 32
    with pytest.raises(ValueError):
        toeplitz.hash_input("::1", "127.0.0.1", 1, 2, ports=True)


def test_short_key_is_refused():
    with pytest.raises(ValueError, match="hashes at most 12"):
        toeplitz.toeplitz(bytes(16), bytes(13))
    with pytest.raises(ValueError):
        toeplitz.byte_tables(bytes(16), 36)


def test_queue_is_the_table_entry_of_the_hash_modulo_its_size():
    indir = [3, 1, 2, 0]
    assert [toeplitz.queue_of(indir, h) for h in (0, 1, 2, 3, 4, 0xFFFFFFFF)] == [3, 1, 2, 0, 3, 0]
    with pytest.raises(ValueError):
        toeplitz.queue_of([], 1)
