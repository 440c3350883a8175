"""Restart members without losing a connection: `rpctl restart` and `rpctl rollout`.

Every restart is the same six steps, for one member or a batch of them:

1. drain: the program sends the member no new connection;
2. wait until its accept queue is empty (its process serves what is queued);
3. stop its process (a signal, then SIGKILL after a deadline);
4. start the replacement;
5. register the replacement's socket under the same name (same index, so
   the same weight and counters);
6. undrain (unless an operator had drained it before: then it stays so).

Requests still in their handshake when a listener closes are not lost: the
program is loaded as SELECT_OR_MIGRATE and the kernel asks it where each one
goes; it picks a live, non-draining member by the weights.

How steps 3-5 happen depends on who started the member:

* Members of `rpctl run` (their process has RPCTL_MEMBER=<name> and
  LISTEN_PID=<own pid> in its environment): the launcher keeps a copy of the
  member's socket and starts a new child on it as soon as a drained child
  exits, so rpctl only signals the child and waits for the launcher to
  register the new pid.  The socket never closes; what arrives in between
  waits in its queue for the new child.
* Any other member needs a command.  By default CMD is the replacement:
  rpctl stops the old process itself, then starts CMD in its own session
  (it outlives rpctl).  With hook=True, CMD restarts the member by itself
  (`systemctl restart app@3`, a container runtime) and rpctl only runs it
  and waits for it to finish.  Either way rpctl then looks for the listener
  that appeared on the group's endpoint meanwhile (sock_diag) and registers
  it.  $RPCTL_MEMBER in CMD is replaced by the member's name.

A member whose socket several processes share (a prefork server's children,
the parent keeping the socket) is refused: no one process is its server to
stop and replace, and its socket never closes; the server's own graceful
restart is how such a member restarts (serve follows the new processes).

A failure at any step stops there with one line saying which member is
left drained: the others go on serving, the group stays steerable.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from ..contract.errors import InvalidInput, NotFound, RpctlError, UsageError, WaitTimeout
from ..contract.refs import Call, Param
from ..kernel import diag, discover, sockets
from ..kernel.process import describe_exit, wait_exit
from ..kernel.server_root import read_stat
from ..read import views
from ..store.lookup import resolve_group
from ..store.registration import register
from ..store.steering import set_draining
from ..store.state import Layout
from ..tables.naming import expand_name
from . import drain

POLL_INTERVAL = 0.05
KILL_GRACE = 5.0  # after SIGKILL: how long a process may take to be gone

# Each step of each member, as it happens: INFO.
log = logging.getLogger("rpctl.restart")

# progress(member, queued, in_handshake, flows) while a drained member's queue empties
# and its UDP flows go quiet: what is queued on it, the port's TCP handshakes (None for
# UDP) and its live flows (None without a flow table); see drain.wait_drained.
Progress = Callable[[str, int, Optional[int], Optional[int]], None]


@dataclass
class RestartOptions:
    command: Optional[Sequence[str]] = None  # replacement command (or hook); needed for members not launched
    hook: bool = False                      # command restarts the member itself: rpctl sends no signal
    signal: int = signal.SIGTERM
    drain_timeout: float = 30.0             # for the queue to empty
    stop_timeout: float = 10.0              # after the signal, before SIGKILL
    start_timeout: float = 30.0             # for the replacement's socket to be registered
    output: str = os.devnull                # a replacement's stdout and stderr


@dataclass
class Restarted:
    name: str
    old_pid: int
    new_pid: int
    launched: bool
    left_drained: bool  # drained by an operator before the restart: stays drained


@dataclass
class _Job:
    name: str
    pid: int
    launched: bool
    was_draining: bool
    new_pid: int = 0
    spawned: int = 0  # pid of the replacement rpctl started (not for launched members or hooks)
    drained_by_us: bool = False


def parse_environ(raw: bytes) -> dict[bytes, bytes]:
    """/proc/PID/environ (NUL-separated NAME=VALUE) as a dict."""
    return dict(item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)


def is_launched(pid: int, name: str) -> bool:
    """Whether pid is the child `rpctl run` started for member `name`."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = parse_environ(f.read())
    except OSError:
        return False
    return env.get(b"RPCTL_MEMBER") == name.encode() and env.get(b"LISTEN_PID") == str(pid).encode()


def batches(names: Sequence[str], size: int) -> list[list[str]]:
    return [list(names[i:i + size]) for i in range(0, len(names), size)]


def check_batch(batch: object, live: int) -> int:
    """A batch must leave at least one live member serving while it is drained."""
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise InvalidInput("rollout: ", Param("batch"), f" {batch!r}: use a whole number of members, at least 1")
    if live < 2:
        raise InvalidInput(f"rollout: {live} live member(s): none would serve while another restarts")
    if batch >= live:
        raise InvalidInput(
            "rollout: ", Param("batch"), f" {batch} would drain every live member at once: use at most {live - 1}"
        )
    return batch


def _descends_from(pid: int, ancestor: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        stat = read_stat(pid)
        if stat is None:
            return False
        pid = stat.ppid
    return False


class _Restart:
    """One batch of members going through the six steps together."""

    def __init__(self, group: str, layout: Layout, opts: RestartOptions, progress: Optional[Progress]):
        self.group = group
        self.layout = layout
        self.opts = opts
        self.progress = progress

    def _view(self) -> views.GroupView:
        return views.read_view(self.group, self.layout, with_queues=True)

    def plan(self, names: Sequence[str], others_must_serve: bool = True) -> list[_Job]:
        """Check everything before anything changes."""
        view = self._view()
        jobs = []
        for name in names:
            m = view.member(name)
            if m.gone:
                raise InvalidInput(
                    f"restart {name}: its socket is gone (no process holds it); start it again and ",
                    Call("register", name, pid="PID", fd="FD", replace=True),
                )
            if m.shared:
                # Restart's steps 3-5 replace a socket's one process and then register the socket the
                # replacement opens; a prefork server's parent keeps the socket and starts children on it.
                pids = ",".join(map(str, m.processes)) or "none now"
                raise InvalidInput(
                    f"restart {name}: several processes of one server share its socket (pids {pids}) and "
                    "the process that keeps it is not one of them: rpctl cannot replace them one by one; "
                    "restart that server gracefully (its new processes take the same socket, and a group kept "
                    "by serve follows them), or ", Call("set_draining", name), " before a restart that closes it",
                )
            launched = is_launched(m.pid, name)
            if not launched and not self.opts.command:
                raise UsageError(
                    f"restart {name}: pid {m.pid} was not started by `rpctl run`; give the command that "
                    "starts its replacement ", Param("command", "RestartOptions"),
                    " (or ", Param("hook", "RestartOptions", flag=True), " and the command that restarts it)",
                )
            if launched and self.opts.command:
                raise UsageError(
                    f"restart {name}: pid {m.pid} was started by `rpctl run`, which starts its replacement "
                    "itself: give no command"
                )
            jobs.append(_Job(name, m.pid, launched, m.draining))
        restarting = {j.name for j in jobs}
        serving = [m for m in view.members if not m.gone and not m.draining and m.name not in restarting]
        if others_must_serve and not serving:
            raise InvalidInput(
                f"restart {', '.join(names)}: no other live member would serve meanwhile in group {self.group!r}"
            )
        return jobs

    def run(self, jobs: list[_Job]) -> list[Restarted]:
        try:
            self._drain(jobs)
            self._wait_drained(jobs)
            if self.opts.hook:
                for j in jobs:
                    # One at a time: a listener that appears is then the hook's.
                    before = self._listener_cookies()
                    self._run_hook(j)
                    self._register_replacement(j, before, time.monotonic() + self.opts.start_timeout)
            else:
                before = self._listener_cookies() if any(not j.launched for j in jobs) else set()
                self._stop(jobs)
                for j in jobs:
                    if not j.launched:
                        self._spawn(j)
                deadline = time.monotonic() + self.opts.start_timeout
                for j in jobs:
                    self._register_replacement(j, before, deadline)
            self._undrain(jobs)
        except RpctlError as e:
            stuck = [j.name for j in jobs if j.drained_by_us]
            if stuck:
                left = ", ".join(stuck)
                e.args = (*e.args, f"; {left} left drained, the other members serve")
            raise
        return [Restarted(j.name, j.pid, j.new_pid, j.launched, j.was_draining) for j in jobs]

    # Steps ----------------------------------------------------------------------

    def _drain(self, jobs: list[_Job]) -> None:
        for j in jobs:
            if not j.was_draining:
                set_draining(j.name, True, group=self.group, layout=self.layout)
                j.drained_by_us = True
                log.info("%s: draining", j.name)

    def _wait_drained(self, jobs: list[_Job]) -> None:
        deadline = time.monotonic() + self.opts.drain_timeout
        for j in jobs:
            drain.wait_drained(
                j.name,
                max(0.0, deadline - time.monotonic()),
                group=self.group,
                layout=self.layout,
                progress=functools.partial(self.progress, j.name) if self.progress else None,
            )
            log.info("%s: drained", j.name)

    def _listener_cookies(self) -> set[int]:
        view = self._view()
        return set(diag.listeners(sockets.proto_number(view.proto), view.port))

    def _stop(self, jobs: list[_Job]) -> None:
        for j in jobs:
            log.info("%s: stopping pid %d (%s)", j.name, j.pid, signal.Signals(self.opts.signal).name)
            try:
                os.kill(j.pid, self.opts.signal)
            except ProcessLookupError:
                pass
        for j in jobs:
            self._wait_stopped(j)

    def _wait_stopped(self, j: _Job) -> None:
        if wait_exit(j.pid, self.opts.stop_timeout):
            log.info("%s: pid %d exited", j.name, j.pid)
            return
        log.info("%s: pid %d still running after %gs: SIGKILL", j.name, j.pid, self.opts.stop_timeout)
        try:
            os.kill(j.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        if not wait_exit(j.pid, KILL_GRACE):
            raise RpctlError(f"restart {j.name}: pid {j.pid} survived SIGKILL")

    def _command(self, j: _Job) -> list[str]:
        return [expand_name(a, j.name) for a in self.opts.command]

    def _run_hook(self, j: _Job) -> None:
        argv = self._command(j)
        log.info("%s: running %s", j.name, " ".join(argv))
        try:
            done = subprocess.run(argv, stdin=subprocess.DEVNULL, timeout=self.opts.start_timeout)
        except FileNotFoundError:
            raise InvalidInput(f"restart {j.name}: command not found: {argv[0]}") from None
        except subprocess.TimeoutExpired:
            raise WaitTimeout(
                f"restart {j.name}: {argv[0]} still running after {self.opts.start_timeout:g}s"
            ) from None
        if done.returncode != 0:
            raise RpctlError(f"restart {j.name}: {argv[0]} exited with status {done.returncode}")

    def _spawn(self, j: _Job) -> None:
        argv = self._command(j)
        actions = [
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, self.opts.output, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644),
            (os.POSIX_SPAWN_DUP2, 1, 2),
        ]
        try:
            # Its own session: the replacement outlives rpctl, and a Ctrl-C in
            # rpctl's terminal does not reach it.
            j.spawned = os.posix_spawnp(argv[0], argv, dict(os.environ, RPCTL_MEMBER=j.name),
                                        file_actions=actions, setsid=True)
        except FileNotFoundError:
            raise InvalidInput(f"restart {j.name}: command not found: {argv[0]}") from None
        except OSError as e:
            raise RpctlError(f"restart {j.name}: cannot start {argv[0]}: {e.strerror}") from None
        log.info("%s: started %s (pid %d)", j.name, argv[0], j.spawned)

    def _register_replacement(self, j: _Job, before: set[int], deadline: float) -> None:
        if j.launched:
            j.new_pid = self._wait_relaunched(j, deadline)
        else:
            pid, fd = self._wait_new_listener(j, before, deadline)
            register(j.name, pid, fd, group=self.group, replace=True, layout=self.layout, attach=False)
            j.new_pid = pid
        log.info("%s: pid %d registered", j.name, j.new_pid)

    def _wait_relaunched(self, j: _Job, deadline: float) -> int:
        while True:
            m = self._view().member(j.name)
            if m.pid != j.pid and not m.gone:
                return m.pid
            if time.monotonic() >= deadline:
                raise WaitTimeout(
                    f"restart {j.name}: `rpctl run` registered no new process within {self.opts.start_timeout:g}s "
                    "(is its launcher still running?)"
                )
            time.sleep(POLL_INTERVAL)

    def _wait_new_listener(self, j: _Job, before: set[int], deadline: float) -> tuple[int, int]:
        """The (pid, fd) serving the one listener that appeared on the group's
        endpoint since the old process stopped."""
        view = self._view()
        taken = {m.cookie for m in view.members}
        while True:
            pid, status = os.waitpid(j.spawned, os.WNOHANG) if j.spawned else (0, 0)
            if pid:
                raise RpctlError(
                    f"restart {j.name}: the replacement (pid {j.spawned}) {describe_exit(status)} before it listened"
                )
            fresh = []
            for ep in discover.discover(port=view.port, proto=view.proto, probe_reuseport=False):
                if ep.key != view.key:
                    continue
                for lst in ep.listeners:
                    if lst.cookie in before or lst.cookie in taken or lst.server is None:
                        continue
                    if j.spawned and not _descends_from(lst.server.pid, j.spawned):
                        continue
                    fresh.append(lst.server)
            if len(fresh) > 1 and not j.spawned:
                pids = ", ".join(str(h.pid) for h in fresh)
                raise InvalidInput(
                    f"restart {j.name}: several new listeners appeared (pids {pids}); register the right one with ",
                    Call("register", j.name, pid="PID", fd="FD", replace=True),
                )
            if fresh:
                return fresh[0].pid, fresh[0].fd
            if time.monotonic() >= deadline:
                raise WaitTimeout(
                    f"restart {j.name}: no new listener on {view.endpoint} within {self.opts.start_timeout:g}s"
                )
            time.sleep(POLL_INTERVAL)

    def _undrain(self, jobs: list[_Job]) -> None:
        for j in jobs:
            if j.was_draining:
                log.info("%s: left drained, as it was before the restart", j.name)
                continue
            set_draining(j.name, False, group=self.group, layout=self.layout)
            j.drained_by_us = False
            log.info("%s: undrained", j.name)


def restart(
    names: Sequence[str],
    group: Optional[str] = None,
    opts: Optional[RestartOptions] = None,
    layout: Optional[Layout] = None,
    progress: Optional[Progress] = None,
) -> list[Restarted]:
    """Restart the members named, together (drained at once, undrained at once).

    Each step is logged (logger "rpctl.restart", INFO); progress(member,
    queued, in_handshake) is called while a drained member's queue empties."""
    if not names:
        raise UsageError("restart: no member named")
    if len(set(names)) != len(names):
        raise UsageError("restart: a member is named twice")
    layout = layout or Layout()
    gname = resolve_group(group, layout)
    r = _Restart(gname, layout, opts or RestartOptions(), progress)
    return r.run(r.plan(names))


def rollout(
    group: Optional[str] = None,
    batch: int = 1,
    opts: Optional[RestartOptions] = None,
    layout: Optional[Layout] = None,
    progress: Optional[Progress] = None,
) -> list[Restarted]:
    """Restart every member of the group, `batch` at a time, in index order;
    stop at the first failure.  Logged, and progress called, as by restart()."""
    layout = layout or Layout()
    gname = resolve_group(group, layout)
    r = _Restart(gname, layout, opts or RestartOptions(), progress)
    view = views.read_view(gname, layout, with_queues=False)
    names = [m.name for m in view.members]
    if not names:
        raise NotFound(f"rollout: group {gname!r} has no members")
    check_batch(batch, sum(1 for m in view.members if not m.gone and not m.draining))
    r.plan(names, others_must_serve=False)  # every member restartable, before the first one is touched
    done: list[Restarted] = []
    for names_now in batches(names, batch):
        done += r.run(r.plan(names_now))
    return done
