"""controller/store/policy.py: weights checked, policies made, and the one "is live" (pure)."""

from __future__ import annotations

import pytest
from rpctl.controller.contract import abi
from rpctl.controller.contract.errors import InvalidInput
from rpctl.controller.store.policy import check_weight, draining_flag, is_live, new_policy


@pytest.mark.parametrize("weight", [0, 1, 9999, 10000])
def test_check_weight_accepts(weight):
    assert check_weight("w", weight) == weight


@pytest.mark.parametrize("weight", [-1, 10001, 2**40, True, False, 1.0, 1.5, "3", None])
def test_check_weight_refuses(weight):
    with pytest.raises(InvalidInput, match="weight of w"):
        check_weight("w", weight)


def test_a_policy_made_and_read_back():
    assert (new_policy(3).weight, new_policy(3).flags) == (3, abi.RP_POLICY_PRESENT)
    drained = new_policy(0, draining=True)
    assert drained.flags == abi.RP_POLICY_PRESENT | abi.RP_POLICY_DRAINING
    assert draining_flag(drained) and not draining_flag(new_policy(1))


@pytest.mark.parametrize("weight, draining, socket_open, live", [
    (1, False, True, True),
    (0, False, True, False),   # weighed out
    (5, True, True, False),    # draining
    (5, False, False, False),  # gone: its socket closed
])
def test_a_live_member_takes_new_connections(weight, draining, socket_open, live):
    assert is_live(weight, draining, socket_open) is live
