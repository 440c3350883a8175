"""controller/store/foreign_state.py: the head of rp_ctl it reads is laid out as in every
state version so far, so that a group of another version can still be detached."""

from __future__ import annotations

import socket
import struct

from hypothesis import given
from hypothesis import strategies as st
from rpctl.controller.contract import abi
from rpctl.controller.kernel.sockets import EndpointKey
from rpctl.controller.store import foreign_state

from tests.support import hostile

# (field, offset, size) of rp_ctl's head since state version 1: change none of them, ever
# (append fields instead), or an upgraded rpctl cannot find an older group's sockets.
HEAD = [("abi_version", 0, 4), ("gen", 4, 4), ("proto", 8, 4), ("family", 12, 4), ("addr", 16, 16), ("port", 32, 2)]


def test_the_head_of_rp_ctl_is_where_every_version_had_it():
    assert [(name, getattr(abi.RpCtl, name).offset, getattr(abi.RpCtl, name).size) for name, _, _ in HEAD] == HEAD
    assert foreign_state.HEAD_SIZE == 34


def test_a_folder_without_state_has_no_endpoint_and_nothing_to_detach(tmp_path):
    assert foreign_state.endpoint(str(tmp_path)) is None
    assert foreign_state.detach(str(tmp_path)) is False


def ctl_head(proto=6, family=socket.AF_INET, addr=b"\x7f\0\0\1", port=8080) -> bytes:
    return struct.pack("=IIII16sH", 9, 0, proto, family, addr.ljust(16, b"\0"), port)


def test_the_endpoint_of_a_ctl_of_any_version():
    assert foreign_state.endpoint_of_ctl(ctl_head() + b"\xff" * 30) == EndpointKey("tcp", socket.AF_INET,
                                                                                     "127.0.0.1", 8080)
    assert foreign_state.endpoint_of_ctl(ctl_head()[:20]) is None


@given(hostile.mutated(ctl_head() + b"\0" * 14) | st.binary(max_size=80)
       | st.builds(ctl_head, st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.binary(max_size=16),
                   st.integers(0, 65535)))
def test_any_ctl_value_names_an_endpoint_or_none(value):
    ep = foreign_state.endpoint_of_ctl(value)
    assert ep is None or (ep.proto in ("tcp", "udp") and ep.family in (socket.AF_INET, socket.AF_INET6))
