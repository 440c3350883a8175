"""Compile and load the SK_REUSEPORT program with bcc.

This is the only module that imports bcc, and only group creation calls it:
importing bcc maps libbcc and LLVM, which every other command can do without.

bcc 0.26 cannot declare a REUSEPORT_SOCKARRAY, so the maps are created by
the controller and handed to the C source as -DRP_FD_<NAME>=<fd>; the
program names them with bpf_pseudo_fd(1, fd).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from importlib import resources
from typing import Iterator, Mapping

from . import bpfsys, probe
from .errors import RpctlError, Unsupported
from .headers import find_kernel_source
from .maps import Map

PROGRAM_NAME = "rp_select"
SOURCE = "steer.bpf.c"


def bpf_dir() -> str:
    return str(resources.files("rpctl.bpf"))


def cflags(maps: Mapping[str, Map], migrate: bool) -> list[str]:
    flags = [f"-I{bpf_dir()}"]
    flags += [f"-DRP_FD_{name.upper()}={m.fd}" for name, m in sorted(maps.items())]
    if migrate:
        flags.append("-DRP_HAVE_MIGRATE")
    return flags


@contextlib.contextmanager
def _stderr_to(path: str) -> Iterator[None]:
    """bcc's compiler and the verifier write to fd 2; keep that out of
    the terminal and in a log the error message names."""
    saved = os.dup(2)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.dup2(fd, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(fd)


def migration_wanted() -> bool:
    """SELECT_OR_MIGRATE where the kernel has it (5.14+).  RPCTL_MIGRATE=0
    loads plain SELECT, as on older kernels: for comparison and tests."""
    if os.environ.get("RPCTL_MIGRATE", "") == "0":
        return False
    return probe.kernel_at_least(probe.MIGRATE_KERNEL)


def load(maps: Mapping[str, Map], migrate: bool) -> int:
    """Compile and load the steering program against `maps`; returns an fd the caller owns."""
    return compile_and_load(os.path.join(bpf_dir(), SOURCE), PROGRAM_NAME, maps, migrate)


def compile_and_load(source: str, function: str, maps: Mapping[str, Map], migrate: bool) -> int:
    """Compile C file `source` with the maps' fds as RP_FD_* macros and load its
    SK_REUSEPORT function `function` (the benchmarks load their floor programs
    through here too, so that they are built exactly as the steering program)."""
    source_tree = find_kernel_source()
    if source_tree:
        os.environ["BCC_KERNEL_SOURCE"] = source_tree
    try:
        from bcc import BPF
    except ImportError:
        raise Unsupported(
            "bcc is not importable: install python3-bpfcc (apt-get install python3-bpfcc) and run rpctl "
            "from a virtualenv made with --system-site-packages"
        ) from None
    with open(source) as f:
        text = f.read()
    attach_type = bpfsys.ATTACH_SK_REUSEPORT_SELECT_OR_MIGRATE if migrate else bpfsys.ATTACH_SK_REUSEPORT_SELECT
    log = tempfile.NamedTemporaryFile(prefix="rpctl-load-", suffix=".log", delete=False)
    log.close()
    try:
        with _stderr_to(log.name):
            bpf = BPF(text=text.encode(), cflags=cflags(maps, migrate))
            fn = bpf.load_func(function.encode(), bpfsys.PROG_TYPE_SK_REUSEPORT, attach_type=attach_type)
            prog_fd = os.dup(fn.fd)
            bpf.cleanup()
    except Exception as e:
        first = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise RpctlError(
            f"compile and load {os.path.basename(source)}: {first} (compiler and verifier log: {log.name})"
        ) from e
    os.unlink(log.name)
    return prog_fd
