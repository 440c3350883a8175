"""Compile and load the SK_REUSEPORT program with bcc.

This is the only module that imports bcc, and only when group creation
finds no compiled program kept (compiled.py): importing bcc maps libbcc and
LLVM, which every other command can do without.

bcc 0.26 cannot declare a REUSEPORT_SOCKARRAY, so the maps are created by
the controller and handed to the C source as -DRP_FD_<NAME>=<number>; the
program names them with bpf_pseudo_fd(1, number).  The numbers are
placeholders, replaced by the maps' fds in the bytecode rpctl loads itself
through bpf(2) (without bcc's BTF line info: `bpftool prog dump xlated`
shows no C lines).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import tempfile
from importlib import resources
from typing import Iterator, Mapping, Sequence

from ..contract.errors import RpctlError, Unsupported
from . import bpfsys, compiled, probe
from .headers import find_kernel_source
from .maps import Map

PROGRAM_NAME = "rp_select"
SOURCE = "steer.bpf.c"


def bpf_dir() -> str:
    return str(resources.files("rpctl.bpf"))


def cflags(fds: Mapping[str, int], migrate: bool, defines: Sequence[str] = ()) -> list[str]:
    """The compiler's flags: each map's fd (or its placeholder, compiled.py) as -DRP_FD_<NAME>,
    then -D of each of `defines`."""
    flags = [f"-I{bpf_dir()}"] + [f"-D{d}" for d in defines]
    flags += [f"-DRP_FD_{name.upper()}={fd}" for name, fd in sorted(fds.items())]
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


# The builds of the steering program (docs/decisions/0017): without either
# macro, a group's program (its short cut, then a tail call to the shared one).
SHARED = "RP_SHARED"  # the program every group shares, through arrays of the groups' maps
OWN = "RP_OWN"        # a group's program with every step, as before the shared one


def load(maps: Mapping[str, Map], migrate: bool) -> int:
    """Compile and load a group's program against its `maps`, the shared
    program's "handoff" and "progs" among them; returns an fd the caller owns."""
    return compile_and_load(os.path.join(bpf_dir(), SOURCE), PROGRAM_NAME, maps, migrate)


def load_own(maps: Mapping[str, Map], migrate: bool) -> int:
    """A group's program that runs every step itself, against the group's `maps` alone."""
    return compile_and_load(os.path.join(bpf_dir(), SOURCE), PROGRAM_NAME, maps, migrate, [OWN])


def load_shared(maps: Mapping[str, Map], migrate: bool) -> int:
    """Compile and load the program every group shares: `maps` holds an
    array of maps for each group map it reads, and the per-CPU "handoff"."""
    return compile_and_load(os.path.join(bpf_dir(), SOURCE), PROGRAM_NAME, maps, migrate, [SHARED])


def shared_digest(names: Sequence[str], migrate: bool) -> str:
    """16 hex digits that name the shared program these sources build
    with these maps and flags: a program of other sources is another
    program, kept apart.  Neither compiles nor needs bcc."""
    source = os.path.join(bpf_dir(), SOURCE)
    # Not the include path: the same sources installed elsewhere build the same program.
    flags = [f for f in cflags(compiled.placeholders(list(names)), migrate, [SHARED]) if not f.startswith("-I")]
    return compiled.cache_key(source, included_files(source), PROGRAM_NAME, flags, None, "")[:16]


def compile_and_load(source: str, function: str, maps: Mapping[str, Map], migrate: bool,
                     defines: Sequence[str] = ()) -> int:
    """Load SK_REUSEPORT function `function` of C file `source` against
    `maps`, compiled once with a placeholder per map and kept (compiled.py),
    the maps' fds set at load (the benchmarks load their floor programs
    through here too, so that they are built exactly as the steering program)."""
    source_tree = find_kernel_source()
    if source_tree:
        os.environ["BCC_KERNEL_SOURCE"] = source_tree
    holders = compiled.placeholders(list(maps))
    flags = cflags(holders, migrate, defines)
    key = compiled.cache_key(source, included_files(source), function, flags, source_tree, _bcc_version())
    attach_type = bpfsys.ATTACH_SK_REUSEPORT_SELECT_OR_MIGRATE if migrate else bpfsys.ATTACH_SK_REUSEPORT_SELECT
    log = tempfile.NamedTemporaryFile(prefix="rpctl-load-", suffix=".log", delete=False)
    log.close()
    try:
        code = compiled.bytecode(key, lambda: compile_with_bcc(source, function, flags, log.name),
                                 check=lambda kept: compiled.fits(kept, holders.values()))
        code = compiled.with_fds(code, {holders[name]: m.fd for name, m in maps.items()})
        prog_fd = bpfsys.prog_load(bpfsys.PROG_TYPE_SK_REUSEPORT, code, attach_type, function)
    except bpfsys.BpfError as e:
        with open(log.name, "a") as f:
            f.write(e.log)
        why = verifier_reason(e.log)
        raise RpctlError(
            f"load {os.path.basename(source)}: {e}{': ' + why[:200] if why else ''} (verifier log: {log.name})"
        ) from e
    except Exception as e:
        first = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise RpctlError(f"compile {os.path.basename(source)}: {first} (compiler log: {log.name})") from e
    os.unlink(log.name)
    return prog_fd


def verifier_reason(log: str) -> str:
    """The verifier's last word in `log`: its last line but the statistics
    it prints after (processed insns, verification time, stack depth)."""
    stats = ("processed ", "verification time", "stack depth")
    lines = [line.strip() for line in log.splitlines() if line.strip() and not line.startswith(stats)]
    return lines[-1] if lines else ""


def included_files(source: str) -> list[str]:
    """The files of rpctl a compile of `source` may include: every header and
    C file beside it and in bpf/, the source itself left out.  All of them
    are in the kept program's key, so that a change to any is compiled
    anew, never served by a program kept from before it."""
    own = os.path.abspath(source)
    folders = {os.path.dirname(own), os.path.abspath(bpf_dir())}
    found = {os.path.join(d, n) for d in folders for n in os.listdir(d) if n.endswith((".h", ".c"))}
    return sorted(found - {own})


def _bcc_version() -> str:
    """bcc's version, read without importing bcc (which maps LLVM: tens of
    milliseconds a load that the kept program does not need)."""
    spec = importlib.util.find_spec("bcc")
    if spec is None or spec.origin is None:
        raise Unsupported(
            "bcc is not importable: install python3-bpfcc (apt-get install python3-bpfcc) and run rpctl "
            "from a virtualenv made with --system-site-packages"
        )
    try:
        with open(os.path.join(os.path.dirname(spec.origin), "version.py")) as f:
            return f.read().strip()
    except OSError:
        return spec.origin  # no version file: at least the install it comes from


def compile_with_bcc(source: str, function: str, flags: list[str], log: str) -> bytes:
    """bcc's bytecode of `function` (compiler messages go to `log`)."""
    from bcc import BPF

    with open(source) as f:
        text = f.read()
    with _stderr_to(log):
        bpf = BPF(text=text.encode(), cflags=flags)
        try:
            return bytes(bpf.dump_func(function.encode()))
        finally:
            bpf.cleanup()
