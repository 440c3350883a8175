"""bpf/'s C read as text: the header and the program, their comments stripped, and the map fds
(RP_FD_<MAP>) the program names."""

from __future__ import annotations

import re
from pathlib import Path

BPF_DIR = Path(__file__).resolve().parents[2] / "bpf"
HEADER = BPF_DIR / "rpctl.h"
PROGRAM = BPF_DIR / "steer.bpf.c"


def strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.DOTALL)
    return re.sub(r"//[^\n]*", " ", text)


def program_sources() -> list[Path]:
    """steer.bpf.c and the headers of bpf/ it includes, directly or through another header."""
    found: list[Path] = []
    todo = [PROGRAM]
    while todo:
        path = todo.pop()
        if path not in found:
            found.append(path)
            todo += [BPF_DIR / name for name in re.findall(r'^#include "([^"]+)"', path.read_text(), flags=re.M)]
    return found


def fd_macros_in_program() -> set[str]:
    """The <MAP> of every RP_FD_<MAP> the program names: the maps whose fds the loader must pass."""
    text = "".join(strip_comments(path.read_text()) for path in program_sources())
    return set(re.findall(r"\bRP_FD_([A-Z0-9_]+)\b", text))
