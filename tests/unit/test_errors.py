"""controller/contract/errors.py: every error class is exported, each with an exit status of its own."""

from __future__ import annotations

from rpctl.controller.contract.errors import ExitStatus, RpctlError

from tests.support.errors import ERROR_CLASSES


def test_every_error_class_is_exported():
    assert set(RpctlError.__subclasses__()) == set(ERROR_CLASSES[1:])
    assert sorted(int(c.exit_status) for c in ERROR_CLASSES) == sorted(int(s) for s in ExitStatus if s != 0)
