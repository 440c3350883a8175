"""The library's error classes: RpctlError and every class rpctl.controller.contract.errors exports."""

from __future__ import annotations

from rpctl.controller.contract import errors

ERROR_CLASSES = [errors.RpctlError] + [
    getattr(errors, n) for n in errors.__all__ if n not in ("ExitStatus", "RpctlError")
]
