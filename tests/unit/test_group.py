"""controller/store/group.py: the store's public face gathers the names of its modules."""

from __future__ import annotations

import inspect

import rpctl.controller as controller
from rpctl.controller.store import group, lifecycle, lookup, membership, registration, steering


def test_the_public_names_are_the_store_modules_own():
    assert group.register is registration.register is controller.register
    assert group.unregister is registration.unregister
    assert group.update_members is membership.update_members
    assert (group.set_weights, group.set_draining, group.is_draining) == (
        steering.set_weights, steering.set_draining, steering.is_draining)
    assert (group.unload, group.resolve_group) == (lifecycle.unload, lookup.resolve_group)
    assert all(getattr(group, name) is not None for name in group.__all__)


def test_register_keeps_its_signature():
    assert list(inspect.signature(group.register).parameters) == [
        "name", "pid", "fd", "group", "weight", "replace", "layout", "attach", "options", "quic_server_id"]
