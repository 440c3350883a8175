"""controller/kernel/loader.py: RP_FD_<MAP> for each map the program reads; the files it keys by; a refused load."""

from __future__ import annotations

import os
import re
import shutil

from rpctl.controller.contract import abi
from rpctl.controller.kernel import compiled, loader
from rpctl.controller.store import shared_program

from tests.support.bpf_source import fd_macros_in_program


def test_loader_passes_one_macro_per_map():
    # A group's program: its maps, the shared program's handoff and program array.
    names = [spec.name for spec in abi.GROUP_MAPS] + [abi.HANDOFF_SPEC.name, abi.PROGS_SPEC.name, abi.SIZED_FLOWS]
    fds = {name: 10 + i for i, name in enumerate(names)}
    flags = loader.cflags(fds, migrate=False, defines=[loader.SHARED])
    defined = {m.group(1): int(m.group(2)) for f in flags if (m := re.fullmatch(r"-DRP_FD_(\w+)=(\d+)", f))}
    assert defined == {name.upper(): fd for name, fd in fds.items()}
    assert fd_macros_in_program() <= set(defined)
    assert "-DRP_SHARED" in flags


def test_the_shared_programs_name_changes_with_its_sources_and_flags(tmp_path, monkeypatch):
    names = shared_program.NAMES
    digest = loader.shared_digest(names, migrate=True)
    assert digest == loader.shared_digest(names, migrate=True) and len(digest) == 16
    assert digest != loader.shared_digest(names, migrate=False)
    copy = tmp_path / "bpf"
    copy.mkdir()
    for path in os.listdir(loader.bpf_dir()):
        if path.endswith((".c", ".h")):
            shutil.copy(os.path.join(loader.bpf_dir(), path), copy / path)
    monkeypatch.setattr(loader, "bpf_dir", lambda: str(copy))
    assert loader.shared_digest(names, migrate=True) == digest
    (copy / "maps.h").write_text((copy / "maps.h").read_text() + "\n/* changed */\n")
    assert loader.shared_digest(names, migrate=True) != digest


def test_a_refused_load_is_explained_by_the_verifiers_last_word():
    from rpctl.controller.kernel.loader import verifier_reason

    log = ("0: R1=ctx() R10=fp0\n0: (79) r1 = *(u64 *)(r0 +4096)\nR0 !read_ok\n"
           "processed 1 insns (limit 1000000) max_states_per_insn 0 total_states 0 peak_states 0 mark_read 0\n")
    assert verifier_reason(log) == "R0 !read_ok"
    assert verifier_reason(log + "verification time 12 usec\nstack depth 0\n") == "R0 !read_ok"
    assert verifier_reason("") == ""


# The kept program's key --------------------------------------------------------------------


def test_the_loader_keys_a_program_by_every_file_it_may_include(tmp_path, monkeypatch):
    """A change to any header or C file beside the source or in bpf/ is a new key:
    a program kept from before it is never loaded."""
    bpf = tmp_path / "bpf"
    bpf.mkdir()
    for name in ("rpctl.h", "flow.h", "steer.bpf.c"):
        (bpf / name).write_text(f"/* {name} */\n")
    monkeypatch.setattr(loader, "bpf_dir", lambda: str(bpf))
    bench = tmp_path / "bench"
    bench.mkdir()
    source = bench / "ref.bpf.c"
    source.write_text('#include "rpctl.h"\n')
    (bench / "notes.txt").write_text("not C\n")
    inputs = loader.included_files(str(source))
    assert [os.path.relpath(p, tmp_path) for p in inputs] == ["bpf/flow.h", "bpf/rpctl.h", "bpf/steer.bpf.c"]

    def key() -> str:
        return compiled.cache_key(str(source), loader.included_files(str(source)), "f", [], None, "0.26.0")

    keys = {key()}
    for name in ("rpctl.h", "flow.h", "steer.bpf.c"):
        (bpf / name).write_text((bpf / name).read_text() + "\n")
        keys.add(key())
    (bpf / "quic.h").write_text("/* new */\n")
    keys.add(key())
    assert len(keys) == 5


def test_every_header_steer_includes_is_in_its_key():
    source = os.path.join(loader.bpf_dir(), loader.SOURCE)
    inputs = {os.path.basename(p) for p in loader.included_files(source)}
    with open(source) as f:
        included = re.findall(r'^#include "([^"]+)"', f.read(), flags=re.M)
    assert included and set(included) <= inputs
