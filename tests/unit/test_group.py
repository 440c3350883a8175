"""controller/group.py without bpffs: the checks of member names and weights."""

from __future__ import annotations


import pytest
from rpctl.controller.errors import InvalidInput
from rpctl.controller.group import check_member_name, check_weight


@pytest.mark.parametrize("name", ["w", "worker-1", "a" * 31, "é" * 15, "canary_2"])
def test_check_member_name_accepts(name):
    assert check_member_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "a" * 32, "a" * 40, "é" * 16, "a=b", "=", " a", "a ", " ", "a\tb", "a\nb"]
)
def test_check_member_name_refuses(name):
    with pytest.raises(InvalidInput, match="member name"):
        check_member_name(name)


@pytest.mark.parametrize("weight", [0, 1, 9999, 10000])
def test_check_weight_accepts(weight):
    assert check_weight("w", weight) == weight


@pytest.mark.parametrize("weight", [-1, 10001, 2**40, True, False, 1.0, 1.5, "3", None])
def test_check_weight_refuses(weight):
    with pytest.raises(InvalidInput, match="weight of w"):
        check_weight("w", weight)
