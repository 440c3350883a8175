"""The pinned state of a namespace's groups, byte for byte: what a refused command must leave as it was."""

from __future__ import annotations

import ctypes

from rpctl.controller.contract import abi
from rpctl.controller.store.group import Group
from rpctl.controller.store.state import Layout


def pinned_bytes() -> dict[str, bytes]:
    """Every element of every pinned map of every group of this namespace, byte for byte, and the program's id."""
    layout = Layout()
    out = {}
    for name in layout.groups():
        with Group.open(name, layout) as g:
            for spec in abi.GROUP_MAPS:
                m, raw = g.maps[spec.name], ctypes.c_char * spec.value_size
                for k in range(spec.max_entries):
                    if spec.map_type == abi.MAP_TYPE_PERCPU_ARRAY:
                        value = b"".join(bytes(v) for v in m.read_percpu(k, raw))
                    else:
                        got = m.get(k, raw)
                        value = b"-" if got is None else bytes(got)
                    out[f"{name}/{spec.name}[{k}]"] = value
            out[f"{name}/prog"] = str(g.prog_id()).encode()
    return out
