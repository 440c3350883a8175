"""What a file of groups (rpctl.toml) says, once read and checked: the spec types.

GroupSpec is one [[group]] table, Config the whole file.  A key left out of
the file takes its field's default; those that `rpctl run` shares (a run
group's backoff and member names) are in controller/ops/run_defaults.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional

from ..contract.errors import NotFound
from ..kernel import sockets
from ..store.options import NONE_GIVEN, GroupOptions
from ..tables.adaptive import DEFAULT_INTERVAL_MS, DEFAULT_QUEUE, DEFAULT_QUEUE_BYTES
from ..tables.naming import DEFAULT_FORMAT
from ..tables.server_generations import Rollout
from .run_defaults import BACKOFF_INITIAL, BACKOFF_MAX

__all__ = ["WEIGHTED", "AdoptRule", "Config", "GroupSpec", "PinSpec", "RunSpec"]


@dataclass(frozen=True)
class AdoptRule:
    """Whose listeners are members: every field given must match the serving process."""

    comm: Optional[str] = None    # its name, as /proc/PID/comm (15 bytes at most)
    exe: Optional[str] = None     # the path of its executable, as /proc/PID/exe
    uid: Optional[int] = None     # its effective user id
    cgroup: Optional[str] = None  # its cgroup v2 path, or one of its parents: "/system.slice/nginx.service"

    def matches(self, comm: str, exe: Optional[str], uid: Optional[int], cgroup: Optional[str]) -> bool:
        if self.comm is not None and comm != self.comm:
            return False
        if self.exe is not None and exe != self.exe:
            return False
        if self.uid is not None and uid != self.uid:
            return False
        if self.cgroup is not None:
            if cgroup is None:
                return False
            parent = self.cgroup.rstrip("/")
            if cgroup != self.cgroup and not cgroup.startswith(parent + "/"):
                return False
        return True

    def mismatch(self, comm: str, exe: Optional[str], uid: Optional[int], cgroup: Optional[str]) -> str:
        """Why a process does not match (the first field that differs), "" when it does."""
        for key, want, have in (("comm", self.comm, comm), ("exe", self.exe, exe), ("uid", self.uid, uid),
                                ("cgroup", self.cgroup, cgroup)):
            if want is not None and not AdoptRule(**{key: want}).matches(comm, exe, uid, cgroup):
                return f"{key} {have!r} is not {want!r}"
        return ""


@dataclass(frozen=True)
class RunSpec:
    """Members launched as `rpctl run` launches them (by `rpctl serve`)."""

    command: tuple[str, ...]
    count: int
    backoff_initial: float = BACKOFF_INITIAL
    backoff_max: float = BACKOFF_MAX


@dataclass(frozen=True)
class PinSpec:
    mode: str = "weighted"  # "weighted", "cpu" or "rss"
    dev: str = ""           # rss: the device whose receive queues pin connections

    @property
    def text(self) -> str:
        return f"rss:{self.dev}" if self.mode == "rss" else self.mode


WEIGHTED = PinSpec()


@dataclass(frozen=True)
class GroupSpec:
    name: str
    listen: sockets.EndpointKey
    adopt: Optional[AdoptRule] = None
    run: Optional[RunSpec] = None
    names: str = DEFAULT_FORMAT
    weights: Mapping[str, int] = field(default_factory=dict)
    default_weight: int = 1
    drain: tuple[str, ...] = ()
    pin: PinSpec = WEIGHTED
    adaptive: bool = False  # serve throttles a member whose queue builds alone (controller/tables/adaptive.py)
    adaptive_queue: int = DEFAULT_QUEUE  # TCP: queued connections
    adaptive_queue_bytes: int = DEFAULT_QUEUE_BYTES  # UDP: bytes in the receive queue
    adaptive_interval_ms: int = DEFAULT_INTERVAL_MS
    options: GroupOptions = NONE_GIVEN  # creation options the file gives (None: not given)
    rollout: Optional[Rollout] = None  # `generations`: None, they steer nothing (decision 0021)
    generation_by: str = "process"     # what tells generations apart (controller/kernel/server_root.py)
    quic_ids_from_cookie: bool = False  # QUIC server ids from the members' socket cookies (tables/quic.of_cookie)
    line: int = 0  # of its [[group]] header in the file


@dataclass(frozen=True)
class Config:
    path: str
    groups: tuple[GroupSpec, ...]

    def group(self, name: str) -> GroupSpec:
        for g in self.groups:
            if g.name == name:
                return g
        raise NotFound(f"{self.path}: no group {name!r}")
