"""`rpctl run`: start N copies of a command on one port, as members of one group.

The launcher plays systemd's part for socket activation: it makes the
SO_REUSEPORT sockets itself and its supervisor (controller/ops/supervisor.py)
starts each child with one of them as fd 3, LISTEN_FDS=1, LISTEN_PID=<that
child> and LISTEN_FDNAMES=<member name> (plus RPCTL_MEMBER=<member name> for
commands that only want their name).  Each child's fd 3 is then registered
as a member under a fixed name (controller/ops/launched_group.py).

It keeps its own copy of every socket on purpose, like systemd: a child
that dies leaves its socket, and the connections queued on it, to its
replacement instead of the kernel resetting them.  The price is that the
dead child's member would keep getting connections nobody accepts, so the
launcher drains it the moment the child is reaped and undrains it once the
replacement holds the socket.  Only connections the dead process had
already accepted are lost.

Under `rpctl serve` the children outlive a launcher that is SIGKILLed
(decision 0025); any launcher of the group takes such orphans back when it
starts (controller/ops/orphans.py), so that they serve on, undisturbed.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import time
from typing import Iterable, Optional, Sequence

from ..contract.errors import InvalidInput, RpctlError, UsageError
from ..contract.refs import Param
from ..kernel import probe
from ..kernel.process import pidfd_exited
from ..kernel import sockets as socks
from ..kernel.sockets import parse_listen
from ..read import views
from ..store.policy import DEFAULT_WEIGHT, check_weight
from ..store.options import GroupOptions
from ..store.state import check_group_name
from ..tables import quic
from ..tables.naming import expand_name, numbered_names
from . import orphans
from .launched_group import LaunchedGroup, Member
from .run_defaults import (BACKOFF_INITIAL, BACKOFF_MAX, DEFAULT_LISTEN, LISTEN_BACKLOG, MAX_COUNT, RUN_NAMES,
                           STOP_TIMEOUT)
from .supervisor import Supervisor, send_signal

PLANNED_MIN_LIFE = 1.0        # a drained child that lived this long and exits is restarted at once
RETIRE_TIMEOUT = 30.0         # a member resize() removes is stopped once drained, or after this long
RETIRE_POLL = 0.2             # how often a retiring member's state is read

# What the launcher does with its members: INFO; what it failed to do (it
# carries on): WARNING.
log = logging.getLogger("rpctl.launcher")


def check_count(count: int) -> None:
    """A launcher's member count: an int in 1..MAX_COUNT."""
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_COUNT:
        raise InvalidInput("run: ", Param("count", "Launcher"), f" {count!r} is out of range 1..{MAX_COUNT}")


def _member_names(name_format: str, count: int) -> list[str]:
    return numbered_names(name_format, count, "run: ", Param("name_format", "Launcher"))


class Launcher:
    """Start, register, supervise and finally stop `count` copies of `argv`."""

    def __init__(
        self,
        group: Optional[str],
        count: int,
        argv: Sequence[str],
        name_format: str = RUN_NAMES,
        listen: str = DEFAULT_LISTEN,
        proto: str = "tcp",
        weight: int = DEFAULT_WEIGHT,
        backoff_initial: float = BACKOFF_INITIAL,
        backoff_max: float = BACKOFF_MAX,
        child_stdout: Optional[str] = None,
        options: Optional[GroupOptions] = None,
        outlive: bool = False,
    ):
        # Everything is checked here, before a socket or a child exists:
        # a refused command line must leave nothing behind.
        if group is not None:
            check_group_name(group)
        check_count(count)
        argv = [str(a) for a in argv]
        if not argv or not argv[0]:
            raise UsageError("run: no command given (put it ", Param("argv", "Launcher"), ")")
        if proto not in socks.PROTO_NUMBERS:
            raise InvalidInput("run: ", Param("proto", "Launcher"), f" {proto!r}: use tcp or udp")
        self.host, self.port = parse_listen(listen, "run: ", Param("listen", "Launcher"))
        if not 0 < backoff_initial <= backoff_max:
            raise InvalidInput(f"run: backoff {backoff_initial}..{backoff_max}: need 0 < initial <= max")
        names = _member_names(name_format, count)
        check_weight(names[0], weight)
        # Creation options of the group (when run creates it), checked now.
        options = (options or GroupOptions()).check()
        options.resolved(socks.PROTO_NUMBERS[proto])  # flow options of a TCP run: refused now
        # outlive: the children go on serving when this process is SIGKILLed
        # (serve's run groups); otherwise they die with it (`rpctl run`).
        self.supervisor = Supervisor(backoff_initial, backoff_max, child_stdout, outlive)
        if not self.supervisor.finds(argv[0]):
            raise InvalidInput(f"run: command not found: {argv[0]}")

        self.group = LaunchedGroup(group, weight, options)
        self.names = names
        self.name_format = name_format
        self.argv = argv
        self.proto = proto
        self.members: list[Member] = []
        # Children of another command that a dead launcher left, taken back to be replaced:
        # (pidfd, when) until they exit; sent SIGTERM at start, SIGKILL at `when`.
        self._replaced: list[tuple[int, float]] = []

    # Public ------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        return socks.endpoint_text(self.proto, socks.family_of(self.host), self.host, self.port)

    def stop(self) -> None:
        """Ask run() to stop, from any thread; a second call stops the
        children with SIGKILL at once instead of waiting for them."""
        self.supervisor.stop()

    def run(self) -> int:
        """Start everything, supervise until a stop signal (SIGTERM, SIGINT, SIGHUP) or stop(), then
        stop the children, unregister the members and unload the group if
        this launcher created it and no one else is in it.  Returns 0.

        Any exception on the way (the controller refusing a registration,
        say) stops and reaps every child before it propagates.
        """
        self.open()
        restore = self.supervisor.install_signals()
        try:
            try:
                self.start()
                while not self.supervisor.stopping:
                    self.step(self.next_due())
            finally:
                self.close()
        finally:
            restore()
        return 0

    # Driven from outside (one `rpctl serve` runs several launchers) -------------
    # open(), start(), then step() whenever fileno() is readable or next_due()
    # has passed, and close() in the end, which stops what start() started.

    def open(self) -> None:
        """Check the kernel and the privileges, make the selector that
        watches the children; nothing is started yet."""
        probe.require_kernel()
        probe.require_bpf_privileges("run")
        self.supervisor.open()

    def start(self) -> None:
        """Take back the children a dead launcher of the group left, make the
        other sockets, start and register the children, attach the program."""
        taken = self._take_back()
        try:
            for name in self.names:
                if name in taken:
                    self.members.append(taken[name])
                else:
                    self._new_member(name)
            self.group.resolve(socks.inspect(self.members[0].sock), self.members, taken)
        except BaseException:
            self._let_go(taken.values())  # refused: they go on serving, unwatched, as before
            raise
        self._stop_replaced()
        for m in self.members:
            if self.supervisor.stopping:
                return
            if not m.pid:
                self._launch(m)
        if not any(m.registered for m in self.members):
            raise RpctlError(f"run: every child of {self.argv[0]} exited before it could be registered")
        self.group.attach(m.sock for m in self.members)
        how = "created" if self.group.created else "joined"
        plural = "" if len(self.members) == 1 else "s"
        log.info("%s group %s on %s with %d member%s", how, self.group.name, self.endpoint, len(self.members), plural)

    def fileno(self) -> int:
        """Readable when a child exited or stop() was called: time to step()."""
        return self.supervisor.fileno()

    def next_due(self) -> Optional[float]:
        """Seconds until the next restart is due; None when none is."""
        now = time.monotonic()
        due = [m.restart_at for m in self.members if m.restart_at is not None]
        due += [kill_at for _, kill_at in self._replaced]
        if any(m.retiring for m in self.members):
            due.append(now + RETIRE_POLL)
        return max(0.0, min(due) - now) if due else None

    def step(self, timeout: Optional[float] = 0.0) -> None:
        """Wait up to `timeout` (None: until something happens) for a child's
        exit, handle the exits, and restart the children whose time came."""
        for m in self.supervisor.wait(timeout):
            if not self.supervisor.stopping:
                self._on_exit(m)
        if self.supervisor.stopping:
            return
        now = time.monotonic()
        for m in self.members:
            if m.restart_at is not None and m.restart_at <= now and not m.retiring:
                self._restart(m)
        retiring = [m for m in self.members if m.retiring]
        if retiring:
            self._retire(retiring, now)
        if self._replaced:
            self._end_replaced(now)

    def resize(self, count: int) -> list[str]:
        """Grow or shrink a running launcher to `count` members, leaving the
        others alone: members named for the numbers up to `count` are
        started and registered; the members beyond it are drained, their
        children stopped once drained (within RETIRE_TIMEOUT), then
        unregistered, as `rpctl restart` stops one.  A member that is still
        retiring when the count grows back keeps running, undrained.
        Returns one line per change."""
        check_count(count)
        wanted = _member_names(self.name_format, count)
        have = {m.name: m for m in self.members}
        changes = []
        for name in wanted:
            m = have.get(name)
            # One already stopping stays retiring: _retired starts it again.
            if m is not None and m.retiring and m.stop_by is None:
                m.retire_by = None
                if m.registered and m.pid:  # a dead one is undrained by its restart
                    self.group.set_draining(name, False)
                changes.append(f"{name} kept")
        added = [name for name in wanted if name not in have]
        if added:
            self.group.check_free(added)
        for name in added:
            changes.append(self._add(name))
        for m in self.members:
            if m.name not in wanted and not m.retiring:
                m.retire_by = time.monotonic() + RETIRE_TIMEOUT
                if m.registered:
                    self.group.set_draining(m.name, True)
                changes.append(f"{m.name} drained, to stop")
        self.names = wanted
        return changes

    def close(self) -> None:
        """Stop the children, unregister, unload (see _shutdown), then close the selector."""
        if not self.supervisor.is_open:
            return
        try:
            self._shutdown()
        finally:
            self.supervisor.close()

    # Start -----------------------------------------------------------------------

    def _make_socket(self) -> socket.socket:
        try:
            sock = socks.reuseport_socket(self.proto, self.host, self.port, LISTEN_BACKLOG)
        except OSError as e:
            hint = ""
            if e.errno == errno.EADDRINUSE:
                hint = " (taken by a socket without SO_REUSEPORT, or of another user)"
            raise InvalidInput(f"run: cannot listen on {self.endpoint}: {e.strerror}{hint}") from None
        if self.port == 0:
            self.port = sock.getsockname()[1]  # the other sockets join the port the kernel picked
        return sock

    def _new_member(self, name: str) -> Member:
        sock = self._make_socket()
        m = Member(name, sock, self.supervisor.backoff_initial, cookie=socks.cookie_of(sock))
        self.members.append(m)
        return m

    def _take_back(self) -> dict[str, Member]:
        """The members whose children a launcher of the group left alive when it died
        (controller/ops/orphans.py), by name: those running our command are watched
        as our own; the others' sockets are kept and their processes stopped, and
        _launch() starts our command on those sockets."""
        if self.port == 0:
            return {}  # a port of its own: no launcher was here before
        key = socks.endpoint_key(self.proto, self.host, self.port)
        taken = {}
        for name, o in self.group.orphans(key, self.names, self._argv_of).items():
            m = Member(name, o.sock, self.supervisor.backoff_initial, cookie=o.member.cookie,
                       registered=True, quic_server_id=o.member.quic_server_id)
            if o.same_command:
                self.supervisor.adopt(m, o.pid, o.pidfd)
                log.info("took back %s (pid %d): its launcher had died", name, o.pid)
            else:
                self._replaced.append((o.pidfd, 0.0))  # stopped by _stop_replaced once start() goes on
                log.info("%s (pid %d), left by a launcher that died, runs another command: stopping it; "
                         "a new child takes its socket", name, o.pid)
            taken[name] = m
        return taken

    def _let_go(self, taken: Iterable[Member]) -> None:
        """Give up the children taken back (start() was refused): they go on as they were."""
        for m in taken:
            self.supervisor.forget(m)
            m.sock.close()
            if m in self.members:
                self.members.remove(m)
        for pidfd, _ in self._replaced:
            os.close(pidfd)
        self._replaced = []

    def _stop_replaced(self) -> None:
        """SIGTERM to the children of another command taken back; SIGKILL STOP_TIMEOUT later."""
        kill_at = time.monotonic() + STOP_TIMEOUT
        for pidfd, _ in self._replaced:
            send_signal(pidfd, signal.SIGTERM)
        self._replaced = [(pidfd, kill_at) for pidfd, _ in self._replaced]

    def _end_replaced(self, now: float, at_once: bool = False) -> None:
        """Let go of the replaced children that exited; SIGKILL those whose time is up."""
        left = []
        for pidfd, kill_at in self._replaced:
            if pidfd_exited(pidfd):
                os.close(pidfd)
            elif at_once or now >= kill_at:
                send_signal(pidfd, signal.SIGKILL)  # not refused: it is gone in a moment
                os.close(pidfd)
            else:
                left.append((pidfd, kill_at))
        self._replaced = left

    def _argv_of(self, name: str) -> list[str]:
        """The command line of member `name`'s child."""
        return [expand_name(a, name) for a in self.argv]

    def _add(self, name: str) -> str:
        """Start and register one more member while running."""
        m = self._new_member(name)
        self.group.assign_new_quic_ids(self.members)
        self._launch(m)
        return f"{name} added"

    def _launch(self, m: Member) -> None:
        """Spawn m's child and register it.  A child that exited already is
        not an error: its exit is handled (and the restart scheduled) by step()."""
        self._spawn(m)
        try:
            self.group.register(m)
        except RpctlError:
            if not self.supervisor.exited(m):
                raise
        self.supervisor.release(m)

    def _spawn(self, m: Member) -> None:
        argv = self._argv_of(m.name)
        env = orphans.child_marks(m.name, argv)
        if m.quic_server_id is not None:
            env[quic.SERVER_ID_VAR] = m.quic_server_id
        self.supervisor.spawn(m, argv, env)

    # Supervise ---------------------------------------------------------------------

    def _on_exit(self, m: Member) -> None:
        gone = self.supervisor.reap(m)
        if m.retiring:
            log.info("%s (pid %d) %s", m.name, gone.pid, gone.how)
            self._retired(m)
            return
        # First thing: no new connection for a socket no one accepts on.
        if m.registered:
            self.group.drain_dead(m)
        # Drained before it exited: a planned stop (`rpctl restart`), not a
        # crash.  The replacement starts at once; the backoff is for crashes.
        planned = m.operator_drained and gone.lived >= PLANNED_MIN_LIFE
        delay = self.supervisor.schedule_restart(m, at_once=planned)
        log.info("%s (pid %d) %s; restarting in %gs", m.name, gone.pid, gone.how, delay)

    def _restart(self, m: Member) -> None:
        m.restarts += 1
        try:
            self._spawn(m)
        except OSError as e:
            delay = self.supervisor.schedule_restart(m)
            log.warning("%s: cannot start it: %s; retrying in %gs", m.name, e.strerror or e, delay)
            return
        try:
            self.group.register(m)
        except RpctlError as e:
            # If the child died already its exit comes through the selector;
            # otherwise it serves what is queued on its socket but gets no new
            # connection until someone registers it.
            log.warning("%s (pid %d): could not register it again: %s", m.name, m.pid, e)
            return
        finally:
            self.supervisor.release(m)
        if m.operator_drained:
            log.info("%s (pid %d) registered again; left drained as it was before", m.name, m.pid)
        elif self.group.undrain(m):
            log.info("%s (pid %d) registered again and undrained", m.name, m.pid)

    # Retire (resize) -----------------------------------------------------------------

    def _retire(self, retiring: Sequence[Member], now: float) -> None:
        """Stop the children of drained retiring members (or of those whose
        time is up), and kill those that ignore SIGTERM."""
        states = self.group.states()
        for m in retiring:
            if not m.pid:
                if m.restart_at is not None:  # died while retiring, before it was stopped
                    self._retired(m)
                continue
            drained = states.get(m.name) == views.DRAINED
            if m.stop_by is None and (drained or now >= m.retire_by):
                # Our copy first: the child's close is then the last one.
                m.sock.close()
                self.supervisor.terminate(m, now)
                log.info("%s (pid %d) %s: stopping it", m.name, m.pid, "drained" if drained else "not drained in time")
            else:
                self.supervisor.kill_overdue(m, now)

    def _retired(self, m: Member) -> None:
        """A retiring member's child is gone: unregister it, forget it."""
        m.sock.close()
        self.members.remove(m)
        if not self.group.unregister(m.name):
            return
        log.info("%s unregistered", m.name)
        if m.name in self.names:  # the count grew back while it was stopping
            try:
                log.info("%s", self._add(m.name))
            except (RpctlError, OSError) as e:
                log.warning("%s: cannot start it again: %s", m.name, e)

    # Stop -----------------------------------------------------------------------------

    def _shutdown(self) -> None:
        """Stop the children, unregister, unload: each step runs even when
        an earlier one failed, and no child survives this method."""
        try:
            # Closing our copies first makes each child's close the last one:
            # the kernel then hands its queued connections to the program, which
            # moves them to a live member (of this group or another) if any.
            for m in self.members:
                m.sock.close()
            self.supervisor.stop_all(self.members)
        finally:
            self.supervisor.kill_all(self.members)
            self._end_replaced(time.monotonic(), at_once=True)
        for m in self.members:
            if m.registered and self.group.unregister(m.name):
                m.registered = False
        self.group.unload_if_created_and_empty()
