"""Which start of a server a process belongs to: the key of its server generation.

Two listeners whose serving processes give the same key belong to the same
generation (controller/tables/server_generations.py, docs/decisions/0021).

By process (the default): the process group of the serving process, known
by its leader's pid and start time (a pid used again is another key).  A
server's master and its workers share the master's process group (nginx's
master calls setsid(); a service manager starts each service in a session
of its own; a shell with job control gives each job its group), and a
reload or graceful restart keeps the master, so keeps the key; a second
instance started beside the first has a master, and a group, of its own.

By cgroup (`generation_by = "cgroup"`): the serving process's cgroup v2
path, for servers run as units of one template (app@blue, app@green).
"""

from __future__ import annotations

from typing import Optional

__all__ = ["BY", "generation_key"]

BY = ("process", "cgroup")  # what a group's generations are told apart by


def _stat_fields(pid: int) -> Optional[list[str]]:
    """The fields of /proc/PID/stat after the command name (which may hold spaces); None when gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    return text[text.rfind(")") + 2:].split()


def generation_key(pid: int, by: str = "process", cgroup: Optional[str] = None) -> Optional[str]:
    """The key of the server generation of the listener `pid` serves; None
    when it cannot be told (the process is gone, or has no cgroup v2 path)."""
    if by == "cgroup":
        return f"cgroup {cgroup}" if cgroup else None
    fields = _stat_fields(pid)
    if fields is None:
        return None
    pgid = int(fields[2])  # state, ppid, pgrp, ...: field 5 of stat
    leader = _stat_fields(pgid)
    # Field 22, the start time in clock ticks since boot, makes a reused pid another key.
    started = leader[19] if leader is not None and int(leader[2]) == pgid else "gone"
    return f"process group {pgid} started {started}"
