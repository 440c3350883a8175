"""What a terminal shows of a rich renderable: its text at a given width, without colour codes."""

from __future__ import annotations

import io

from rich.console import Console


def text_of(renderable, width: int) -> str:
    console = Console(file=io.StringIO(), width=width, force_terminal=False)
    console.print(renderable)
    return console.file.getvalue()
