"""Only the command that compiles a group's program imports bcc (which maps
libbcc and LLVM: 40-70 ms), and only when no compiled program is kept
(controller/kernel/compiled.py); every other command, and a group made again,
reaches the kernel through the bpf syscall.  (`rpctl doctor`
imports bcc on purpose: whether it imports is one of its checks.)  pyroute2
(65-90 ms to import) is not needed by any: controller/kernel/diag.py decodes
sock_diag itself.
"""

from __future__ import annotations

import os
import subprocess
import sys

from rpctl.controller.kernel import compiled

from tests.support.traffic import PORT

# Runs one rpctl command line, then reports which heavy packages it imported.
PROBE = """
import sys
from rpctl.cli.main import run
code = run(sys.argv[1:])
print("heavy:" + ",".join(sorted({m.split(".")[0] for m in sys.modules} & {"bcc", "pyroute2"})), file=sys.stderr)
sys.exit(code)
"""


def heavy_imports(*argv: object) -> set[str]:
    proc = subprocess.run([sys.executable, "-c", PROBE, *map(str, argv)], capture_output=True, text=True)
    assert proc.returncode == 0, f"rpctl {' '.join(map(str, argv))}: {proc.stderr}"
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("heavy:")
    return set(filter(None, line[len("heavy:"):].split(",")))


def test_only_compiling_a_program_imports_bcc(netns, make_members, tmp_path, monkeypatch):
    members = make_members(port=PORT)
    first, second = members.add(), members.add()
    pid = os.getpid()
    # No compiled program kept: the first member creates the group, compiles,
    # loads and pins.  (Also shows the probe sees bcc.)
    monkeypatch.setenv(compiled.CACHE_ENV, str(tmp_path / "programs"))
    assert heavy_imports("register", "w0", "--pid", pid, "--fd", first.fileno()) == {"bcc"}

    for argv in [
        ("register", "w1", "--pid", pid, "--fd", second.fileno()),  # joins: no program to load
        ("weights",),
        ("weights", "--json"),
        ("weights", "w0=2"),
        ("drain", "w1"),
        ("weights",),  # a draining member: queue depths are read (sock_diag)
        ("status",),
        ("status", "--json"),
        ("undrain", "w1"),
        ("discover", "--port", PORT, "--json"),
        ("unregister", "w1"),
        ("unload",),
        # The group made again: its program is the kept one, loaded by rpctl itself.
        ("register", "w0", "--pid", pid, "--fd", first.fileno()),
    ]:
        assert heavy_imports(*argv) == set(), argv
