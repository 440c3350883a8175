"""controller/views.py: a member's state from its flags and queue."""

from __future__ import annotations


import pytest
from tests.support.views import member


@pytest.mark.parametrize(
    "draining, gone, queue, state",
    [
        (False, False, 5, "active"),
        (False, False, 0, "active"),
        (False, False, None, "active"),
        (True, False, 3, "draining"),
        (True, False, None, "draining"),  # queue unknown: not yet known to be empty
        (True, False, 0, "drained"),
        (False, True, 0, "gone"),
        (True, True, 0, "gone"),
        (True, True, None, "gone"),
    ],
)
def test_member_state(draining, gone, queue, state):
    assert member(0, "w", draining=draining, gone=gone, queue=queue).state == state
