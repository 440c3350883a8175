"""The dashboard fed by hand: snapshots played into a History, and a frame as the text a
terminal of a given size shows."""

from __future__ import annotations

import io

from rich.console import Console
from rpctl.cli.dashboard_history import History, Snapshot
from rpctl.cli.dashboard_screen import render


def frame(snap: Snapshot, history: History, width: int, height: int) -> str:
    console = Console(file=io.StringIO(), width=width, height=height, force_terminal=False)
    console.print(render(snap, history, width, height))
    return console.file.getvalue()


def history_of(make, seconds: float = 10.0, step: float = 0.25) -> tuple[History, Snapshot]:
    """Snapshots of make(t) every `step` seconds for `seconds`; returns the history and the last one."""
    history = History()
    snap = None
    for i in range(int(seconds / step) + 1):
        t = i * step
        snap = Snapshot(time=t, groups=make(t))
        history.update(snap)
    return history, snap
