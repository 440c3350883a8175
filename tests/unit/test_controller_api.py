"""rpctl.controller's public API: an explicit __all__, and nothing heavy imported with the package."""

from __future__ import annotations

import subprocess
import sys

import rpctl.controller as controller

HEAVY = ("bcc", "rich", "prometheus_client", "pyroute2")


def _imported_after(code: str) -> list[str]:
    probe = f"import sys\n{code}\nprint(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return [m for m in out.strip().split(",") if m]


def test_importing_the_package_imports_nothing_heavy():
    assert _imported_after("import rpctl.controller") == []
    assert _imported_after("import rpctl.controller as c; c.__all__") == []


def test_every_public_name_is_there_and_cheap():
    for name in controller.__all__:
        assert getattr(controller, name) is not None, name
    assert controller.group.register is controller.register
    assert set(controller.MODULES) <= set(dir(controller))
    # The names come from modules that load bcc and pyroute2 only when they need them.
    assert _imported_after("from rpctl.controller import *") == []
