"""controller/store/foreign_state.py: the head of rp_ctl it reads is laid out as in every
state version so far, so that a group of another version can still be detached."""

from __future__ import annotations

from rpctl.controller.contract import abi
from rpctl.controller.store import foreign_state

# (field, offset, size) of rp_ctl's head since state version 1: change none of them, ever
# (append fields instead), or an upgraded rpctl cannot find an older group's sockets.
HEAD = [("abi_version", 0, 4), ("gen", 4, 4), ("proto", 8, 4), ("family", 12, 4), ("addr", 16, 16), ("port", 32, 2)]


def test_the_head_of_rp_ctl_is_where_every_version_had_it():
    assert [(name, getattr(abi.RpCtl, name).offset, getattr(abi.RpCtl, name).size) for name, _, _ in HEAD] == HEAD
    assert foreign_state.HEAD_SIZE == 34


def test_a_folder_without_state_has_no_endpoint_and_nothing_to_detach(tmp_path):
    assert foreign_state.endpoint(str(tmp_path)) is None
    assert foreign_state.detach(str(tmp_path)) is False
