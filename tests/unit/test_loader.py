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
