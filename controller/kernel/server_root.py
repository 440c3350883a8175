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

from typing import Collection, NamedTuple, Optional

from .proc_files import read_text

__all__ = ["BY", "ProcStat", "generation_key", "parse_stat", "read_stat"]

BY = ("process", "cgroup")  # what a group's generations are told apart by


class ProcStat(NamedTuple):
    """What rpctl reads of /proc/PID/stat."""

    ppid: int  # field 4
    start: str  # field 22: the start time in clock ticks since boot (digits)


def parse_stat(text: str) -> Optional[ProcStat]:
    """The parent and start time in the text of /proc/PID/stat; None when it does not read as one.
    The command name, in parentheses, may hold spaces and parentheses: the fields follow the last ')'."""
    _, sep, tail = text.rpartition(")")
    fields = tail.split()
    if not sep or len(fields) < 20 or not fields[1].isascii() or not fields[1].isdigit() \
            or not fields[19].isascii() or not fields[19].isdigit():
        return None
    return ProcStat(int(fields[1]), fields[19])


def read_stat(pid: int) -> Optional[ProcStat]:
    """parse_stat() of process `pid`; None when it is gone (or its stat does not read)."""
    try:
        return parse_stat(read_text(f"/proc/{pid}/stat"))
    except OSError:
        return None


def generation_key(pid: int, holders: Collection[int] = (), by: str = "process",
                   cgroup: Optional[str] = None) -> Optional[str]:
    """The key of the server generation of a listener that `pid` serves;
    `holders`: the pids that hold any listener of the endpoint.  None when
    it cannot be told (the process is gone, or has no cgroup v2 path)."""
    if by == "cgroup":
        return f"cgroup {cgroup}" if cgroup else None
    stat = read_stat(pid)
    if stat is None:
        return None
    seen = {pid}
    while True:
        parent = stat.ppid
        above = read_stat(parent) if parent in holders and parent not in seen else None
        if above is None:
            # The start time makes a reused pid another key.
            return f"process {pid} started {stat.start}"
        pid, stat = parent, above
        seen.add(pid)
