"""Which start of a server a process belongs to: the key of its server generation.

Two listeners whose serving processes give the same key belong to the same
generation (controller/tables/server_generations.py, docs/decisions/0021).

By process (the default): the topmost process, going up from the serving
process through its parents, that holds a listener of the endpoint -- a
server's master, which opens the listeners and forks the workers that
serve them -- known by its pid and start time (a pid used again is another
key).  A reload or graceful restart keeps the master (nginx -s reload
replaces the workers, not the master), so keeps the key; a second instance
started beside the first has a master of its own, whoever started both.
A server that closes its copies in the parent after forking has no such
master: each serving process is its own generation (use cgroups then).

By cgroup (`generation_by = "cgroup"`): the serving process's cgroup v2
path, for servers run as units of one template (app@blue, app@green).
"""

from __future__ import annotations

from typing import Collection, Optional

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


def generation_key(pid: int, holders: Collection[int] = (), by: str = "process",
                   cgroup: Optional[str] = None) -> Optional[str]:
    """The key of the server generation of a listener that `pid` serves;
    `holders`: the pids that hold any listener of the endpoint.  None when
    it cannot be told (the process is gone, or has no cgroup v2 path)."""
    if by == "cgroup":
        return f"cgroup {cgroup}" if cgroup else None
    fields = _stat_fields(pid)
    if fields is None:
        return None
    seen = {pid}
    while True:
        parent = int(fields[1])  # state, ppid, ...: field 4 of stat
        above = _stat_fields(parent) if parent in holders and parent not in seen else None
        if above is None:
            # Field 22, the start time in clock ticks since boot, makes a reused pid another key.
            return f"process {pid} started {fields[19]}"
        pid, fields = parent, above
        seen.add(pid)
