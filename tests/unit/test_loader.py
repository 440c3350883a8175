"""controller/kernel/loader.py: a -DRP_FD_<MAP> for every map the program reads; a refused load, explained."""

from __future__ import annotations

import re

from rpctl.controller.contract import abi
from rpctl.controller.kernel import loader

from tests.support.bpf_source import fd_macros_in_program


def test_loader_passes_one_macro_per_map():
    fds = {spec.name: 10 + i for i, spec in enumerate(abi.GROUP_MAPS)}
    flags = loader.cflags(fds, migrate=False)
    defined = {m.group(1): int(m.group(2)) for f in flags if (m := re.fullmatch(r"-DRP_FD_(\w+)=(\d+)", f))}
    assert defined == {name.upper(): fd for name, fd in fds.items()}
    assert fd_macros_in_program() <= set(defined)


def test_a_refused_load_is_explained_by_the_verifiers_last_word():
    from rpctl.controller.kernel.loader import verifier_reason

    log = ("0: R1=ctx() R10=fp0\n0: (79) r1 = *(u64 *)(r0 +4096)\nR0 !read_ok\n"
           "processed 1 insns (limit 1000000) max_states_per_insn 0 total_states 0 peak_states 0 mark_read 0\n")
    assert verifier_reason(log) == "R0 !read_ok"
    assert verifier_reason(log + "verification time 12 usec\nstack depth 0\n") == "R0 !read_ok"
    assert verifier_reason("") == ""
