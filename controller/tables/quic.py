"""QUIC routing by connection id: plaintext QUIC-LB server ids (pure).

draft-ietf-quic-load-balancers, plaintext algorithm: a connection id a
server issues is

    first octet | server id (length fixed per group) | nonce (>= 4 bytes)

The first octet's top 3 bits are the config rotation (0b111: unroutable,
which a balancer must not read a server id from); the low 5 bits are the
connection id's length or random.  The program reads the server id of
Handshake and short-header packets (ids the server chose) and sends the
datagram to the member whose id it is, whatever its 4-tuple.

Here: the id helpers (text form, checks, assignment), the connection ids a
server makes (what a worker in Python, or the tests' aioquic servers, put
in every id they issue), and the sorted table a generation carries for the
program's lookup.
"""

from __future__ import annotations

import os
import string
from typing import Iterable, Mapping, Optional

from ..contract import abi
from ..contract.errors import InvalidInput

DEFAULT_SERVER_ID_LENGTH = 1
MIN_NONCE_LENGTH = 4          # the draft's minimum
CONFIG_ROTATION_SHIFT = 5     # the first octet's top 3 bits
UNROUTABLE_ROTATION = 0b111
LENGTH_BITS = 0x1F
MAX_CID_LENGTH = 20           # RFC 9000

# The environment variable that hands a launched child its server id (hex).
SERVER_ID_VAR = "RPCTL_QUIC_SERVER_ID"


def check_length(length: object) -> int:
    if isinstance(length, bool) or not isinstance(length, int) or not 1 <= length <= abi.RP_QUIC_MAX_SID_LEN:
        raise InvalidInput(f"QUIC server id length {length!r}: use 1..{abi.RP_QUIC_MAX_SID_LEN} bytes")
    return length


def parse_server_id(text: str, length: int) -> int:
    """A server id written in hex (`0a`, `0x0a01`) -> its value; at most `length` bytes."""
    digits = text.lower().removeprefix("0x")
    if not digits or not all(c in string.hexdigits for c in digits):
        raise InvalidInput(f"QUIC server id {text!r}: write it in hex, e.g. 0a")
    value = int(digits, 16)
    if value >> (8 * length):
        raise InvalidInput(f"QUIC server id {text!r} is longer than the group's {length}-byte server ids")
    return value


def format_server_id(value: int, length: int) -> str:
    """The hex form of a server id, two digits per byte: what RPCTL_QUIC_SERVER_ID holds."""
    return value.to_bytes(length, "big").hex()


def assign(taken: Iterable[int], length: int) -> int:
    """The lowest server id not in `taken`."""
    used = set(taken)
    for value in range(1 << (8 * length)):
        if value not in used:
            return value
    raise InvalidInput(f"every {length}-byte QUIC server id is taken")


def of_cookie(cookie: int, length: int) -> int:
    """The server id a socket of this cookie (SO_COOKIE) has when a group takes its
    members' ids from their sockets: its low `length` bytes.  A server reads its
    own socket's cookie and knows its id without being told (nginx puts its
    listener's cookie in its connection ids likewise); cookies count up, so the
    ids of two sockets differ unless 2**(8*length) sockets were made between them."""
    return cookie & ((1 << (8 * length)) - 1)


def make_cid(server_id: bytes, cid_length: int, rotation: int = 0) -> bytes:
    """A plaintext QUIC-LB connection id of `cid_length` bytes carrying `server_id`:
    the first octet's low 5 bits say the length that follows it, the nonce is random."""
    nonce = cid_length - 1 - len(server_id)
    if nonce < MIN_NONCE_LENGTH or cid_length > MAX_CID_LENGTH:
        raise InvalidInput(
            f"QUIC connection ids of {cid_length} bytes cannot carry a {len(server_id)}-byte server id "
            f"and a {MIN_NONCE_LENGTH}-byte nonce (at most {MAX_CID_LENGTH} bytes)"
        )
    first = (rotation << CONFIG_ROTATION_SHIFT) | ((cid_length - 1) & LENGTH_BITS)
    return bytes([first]) + server_id + os.urandom(nonce)


def server_id_of(cid: bytes, length: int) -> Optional[bytes]:
    """The server id a connection id carries; None when it is unroutable or too short."""
    if len(cid) < 1 + length or cid[0] >> CONFIG_ROTATION_SHIFT == UNROUTABLE_ROTATION:
        return None
    return cid[1:1 + length]


def lookup_table(ids: Mapping[int, int]) -> list[int]:
    """Member index -> server id, as the generation's sorted table of
    (server id << 32 | index), padded with RP_QUIC_NO_ID: the program finds
    an id with a fixed number of halvings (docs/decisions/0011)."""
    entries = sorted((sid << 32) | idx for idx, sid in ids.items())
    return entries + [abi.RP_QUIC_NO_ID] * (abi.RP_MAX_MEMBERS - len(entries))
