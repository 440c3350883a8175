"""controller/tables/naming.py: the stable {i} rule, run's numbered names, $RPCTL_MEMBER, the name check (pure)."""

from __future__ import annotations

import pytest
from rpctl.controller.contract.errors import InvalidInput
from rpctl.controller.tables.naming import (
    Newcomer,
    assign_names,
    check_format,
    check_member_name,
    expand_name,
    format_name,
    numbered_names,
)


def _n(pid: int, fd: int = 5, comm: str = "nginx") -> Newcomer:
    return Newcomer(comm, pid, fd)


def test_newcomers_take_the_lowest_free_numbers_in_order():
    assert assign_names("{comm}-{i}", [_n(1), _n(2), _n(3)], set()) == ["nginx-1", "nginx-2", "nginx-3"]


def test_a_fourth_listener_after_a_reload_becomes_the_fourth_name():
    assert assign_names("{comm}-{i}", [_n(9)], {"nginx-1", "nginx-2", "nginx-3"}) == ["nginx-4"]


def test_a_freed_number_is_taken_again_first():
    assert assign_names("{comm}-{i}", [_n(9), _n(10)], {"nginx-1", "nginx-3"}) == ["nginx-2", "nginx-4"]


def test_numbers_are_per_name_so_other_processes_count_apart():
    taken = {"nginx-1", "envoy-1"}
    assert assign_names("{comm}-{i}", [_n(1, comm="envoy"), _n(2)], taken) == ["envoy-2", "nginx-2"]


def test_one_process_with_several_listeners_gets_several_names():
    assert assign_names("{comm}-{i}", [_n(7, 3), _n(7, 4)], set()) == ["nginx-1", "nginx-2"]


def test_formats_without_i_give_one_name_each_and_leave_collisions_to_the_caller():
    assert assign_names("{comm}-{pid}", [_n(7, 3), _n(7, 4)], set()) == ["nginx-7", "nginx-7"]


def test_bad_formats_are_refused():
    with pytest.raises(InvalidInput, match=r"unknown field \{port\}"):
        assign_names("{comm}-{port}", [_n(1)], set())
    with pytest.raises(InvalidInput, match=r"unknown field \{comm\} \(use \{i\}\)"):
        check_format("{comm}-{i}", ("i",))
    assert format_name("{comm}:{i}", "my server", 1, 1, 2) == "my_server:2"


@pytest.mark.parametrize("name", ["w", "worker-1", "a" * 31, "é" * 15, "canary_2"])
def test_check_member_name_accepts(name):
    assert check_member_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "a" * 32, "a" * 40, "é" * 16, "a=b", "=", " a", "a ", " ", "a\tb", "a\nb"]
)
def test_check_member_name_refuses(name):
    with pytest.raises(InvalidInput, match="member name"):
        check_member_name(name)


def test_format_name():
    assert format_name("{comm}-{pid}", "nginx", 42, 5, 1) == "nginx-42"
    assert format_name("w{i}-fd{fd}", "x", 42, 5, 3) == "w3-fd5"
    assert format_name("{comm}", "my server=1", 1, 1, 1) == "my_server_1"
    assert format_name("{pid:06d}", "x", 42, 5, 1) == "000042"
    with pytest.raises(InvalidInput, match=r"unknown field \{port\}"):
        format_name("{comm}-{port}", "x", 1, 1, 1)
    with pytest.raises(InvalidInput, match=r"unknown field \{\}"):
        format_name("w-{}", "x", 1, 1, 1)
    with pytest.raises(InvalidInput, match="name format"):
        format_name("w-{pid", "x", 1, 1, 1)
    with pytest.raises(InvalidInput, match="name format"):
        format_name("{comm:d}", "x", 1, 1, 1)
    with pytest.raises(InvalidInput, match="member name"):
        format_name("x" * 100 + "{i}", "x", 1, 1, 1)
    with pytest.raises(InvalidInput, match="member name"):
        format_name(" {i}", "x", 1, 1, 1)


def test_numbered_names_are_the_format_with_i_from_one():
    assert numbered_names("worker-{i}", 3) == ["worker-1", "worker-2", "worker-3"]
    assert numbered_names("w{i:02d}", 2) == ["w01", "w02"]


@pytest.mark.parametrize(
    "name_format, says",
    [
        ("w{x}", "name format 'w{x}': only {i} may be used"),
        ("w{}", "name format 'w{}': only {i} may be used"),
        ("same", "name format 'same' gives every member the same name: put {i} in it"),
        ("a=b{i}", "member name 'a=b1'"),
    ],
)
def test_numbered_names_refuse(name_format, says):
    with pytest.raises(InvalidInput) as e:
        numbered_names(name_format, 2)
    assert str(e.value).startswith(says), str(e.value)


def test_expand_name_replaces_the_member_variables_only():
    assert [expand_name(a, "w-1") for a in ("$RPCTL_MEMBER", "--id=${LISTEN_FDNAMES}", "$RPCTL_MEMBERS", "$HOME")] == [
        "w-1", "--id=w-1", "$RPCTL_MEMBERS", "$HOME"]
