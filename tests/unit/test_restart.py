"""controller/ops/restart.py without processes: environment parsing, batches and batch limits."""
from __future__ import annotations

import os

import pytest
from hypothesis import given
from rpctl.controller.contract.errors import InvalidInput
from rpctl.controller.ops.restart import batches, check_batch, is_launched, parse_environ

from tests.support import hostile


def test_parse_environ():
    raw = b"PATH=/bin\0RPCTL_MEMBER=worker-2\0EMPTY=\0A=b=c\0junk\0"
    assert parse_environ(raw) == {b"PATH": b"/bin", b"RPCTL_MEMBER": b"worker-2", b"EMPTY": b"", b"A": b"b=c"}


def test_is_launched_needs_the_name_and_its_own_listen_pid(monkeypatch):
    # This very process was not started by rpctl run.
    assert not is_launched(os.getpid(), "worker-1")
    assert not is_launched(2**22 + 12345, "worker-1")  # no such process


def test_batches():
    assert batches(["a", "b", "c", "d", "e"], 2) == [["a", "b"], ["c", "d"], ["e"]]
    assert batches(["a"], 3) == [["a"]]


@pytest.mark.parametrize("batch, live, message", [
    (0, 4, "at least 1"),
    (True, 4, "at least 1"),
    ("2", 4, "at least 1"),
    (4, 4, "use at most 3"),
    (1, 1, "none would serve"),
])
def test_check_batch_refuses(batch, live, message):
    with pytest.raises(InvalidInput, match=message):
        check_batch(batch, live)


def test_check_batch_accepts():
    assert check_batch(3, 4) == 3
    assert check_batch(1, 2) == 1


@given(hostile.mutated(b"PATH=/bin\0RPCTL_MEMBER=worker-2\0LISTEN_PID=42\0"))
def test_any_environ_gives_names_and_values(raw):
    assert all(isinstance(k, bytes) and isinstance(v, bytes) for k, v in parse_environ(raw).items())
