"""`rpctl run`: start N copies of a command on one port, as members of one group.

The launcher plays systemd's part for socket activation: it makes the
SO_REUSEPORT sockets itself and hands each child one of them as fd 3 with
LISTEN_FDS=1, LISTEN_PID=<that child> and LISTEN_FDNAMES=<member name>
(plus RPCTL_MEMBER=<member name> for commands that only want their name).
Each child's fd 3 is then registered as a member under a fixed name.

It keeps its own copy of every socket on purpose, like systemd: a child
that dies leaves its socket, and the connections queued on it, to its
replacement instead of the kernel resetting them.  The price is that the
dead child's member would keep getting connections nobody accepts, so the
launcher drains it the moment the child is reaped and undrains it once the
replacement holds the socket.  Only connections the dead process had
already accepted are lost.

Children are started through a tiny Python wrapper (posix_spawn, then
exec): it sets LISTEN_PID to its own pid, which the exec keeps, so that
LISTEN_PID is the pid that runs CMD; and it asks the kernel to SIGKILL it
when the launcher dies (PR_SET_PDEATHSIG), so that not even a SIGKILLed
launcher leaves children behind.  Each child gets its own process group:
a Ctrl-C in a terminal reaches the launcher alone, which then stops the
children in order.
"""

from __future__ import annotations

import errno
import logging
import os
import selectors
import shutil
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from ..contract.errors import InvalidInput, NotFound, RpctlError, UsageError
from ..contract.refs import Param
from ..kernel import probe
from ..kernel import sockets as socks
from ..kernel.process import describe_exit, pidfd_exited
from ..read import views
from ..store import group as groups
from ..store.options import GroupOptions
from ..store.state import check_group_name
from ..tables import quic
from ..tables.naming import expand_name, numbered_names
from .run_defaults import (
    BACKOFF_INITIAL,
    BACKOFF_MAX,
    DEFAULT_LISTEN,
    LISTEN_BACKLOG,
    MAX_COUNT,
    RUN_NAMES,
    STABLE_AFTER,
    STOP_TIMEOUT,
)

LISTEN_FD = 3                 # SD_LISTEN_FDS_START
PLANNED_MIN_LIFE = 1.0        # a drained child that lived this long and exits is restarted at once
RETIRE_TIMEOUT = 30.0         # a member resize() removes is stopped once drained, or after this long
RETIRE_POLL = 0.2             # how often a retiring member's state is read

# What the launcher does and what becomes of its children: INFO; what it
# failed to do (it carries on): WARNING.
log = logging.getLogger("rpctl.launcher")

_PR_SET_PDEATHSIG = 1
# Run as `python -I -S -c WRAPPER <launcher pid> CMD...`.  Checking the
# parent after prctl closes the window in which the launcher died before
# the death signal was armed.
_EXEC_WRAPPER = f"""\
import ctypes, os, sys
ctypes.CDLL(None).prctl({_PR_SET_PDEATHSIG}, {int(signal.SIGKILL)}, 0, 0, 0)
if os.getppid() != int(sys.argv[1]):
    os._exit(1)
os.environ["LISTEN_PID"] = str(os.getpid())
try:
    os.execvp(sys.argv[2], sys.argv[2:])
except OSError as e:
    sys.stderr.write("rpctl run: cannot run %s: %s\\n" % (sys.argv[2], e.strerror))
    os._exit(127)
"""


def parse_listen(listen: str, *what: object) -> tuple[str, int]:
    """HOST:PORT or [V6]:PORT -> (address, port), refused as InvalidInput;
    `what` (message parts, "listen" when none) says whose address it is."""
    try:
        return socks.parse_hostport(listen)
    except ValueError as e:
        raise InvalidInput(*(what or ("listen",)), f" {listen!r}: {e}") from None


def check_count(count: int) -> None:
    """A launcher's member count: an int in 1..MAX_COUNT."""
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_COUNT:
        raise InvalidInput("run: ", Param("count", "Launcher"), f" {count!r} is out of range 1..{MAX_COUNT}")


def _member_names(name_format: str, count: int) -> list[str]:
    return numbered_names(name_format, count, "run: ", Param("name_format", "Launcher"))


@dataclass
class Member:
    """One member: its name, the launcher's copy of its socket, its child."""

    name: str
    sock: socket.socket
    backoff: float
    cookie: int = 0                # of the socket: tells our socket in the array from others
    pid: int = 0                   # 0 while no child runs
    pidfd: int = -1
    started: float = 0.0           # time.monotonic() at spawn
    restart_at: Optional[float] = None
    registered: bool = False       # the group knows this name
    operator_drained: bool = False  # drained by someone else before its child died: stays drained
    restarts: int = 0
    quic_server_id: Optional[str] = None  # hex, in a QUIC group: the same for every child of the member
    retire_by: Optional[float] = None  # resize() removed it: drained, stopped by then at the latest
    stop_by: Optional[float] = None    # its child was sent SIGTERM: SIGKILL after this

    @property
    def retiring(self) -> bool:
        return self.retire_by is not None


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
        weight: int = groups.DEFAULT_WEIGHT,
        backoff_initial: float = BACKOFF_INITIAL,
        backoff_max: float = BACKOFF_MAX,
        child_stdout: Optional[str] = None,
        options: Optional[GroupOptions] = None,
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
        groups.check_weight(names[0], weight)
        # Creation options of the group (when run creates it), checked now.
        self.options = (options or GroupOptions()).check()
        self.options.resolved(socks.PROTO_NUMBERS[proto])  # flow options of a TCP run: refused now
        # Inherited activation variables would describe the launcher's own fds.
        inherited = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")
        self.env = {k: v for k, v in os.environ.items() if k not in inherited}
        if shutil.which(argv[0], path=self.env.get("PATH", os.defpath)) is None:
            raise InvalidInput(f"run: command not found: {argv[0]}")

        self.group = group
        self.names = names
        self.name_format = name_format
        self.argv = argv
        self.proto = proto
        self.weight = weight
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        # A file the children's stdout goes to instead of the launcher's own.
        self.child_stdout = child_stdout
        self.members: list[Member] = []
        self.created = False           # this launcher created the group: it unloads it when empty
        self._sel: Optional[selectors.BaseSelector] = None
        self._wake: Optional[socks.SelfPipe] = None
        self._stop_requests = 0
        self._attached = False         # set once running: a group missing after that was unloaded

    # Public ------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        return socks.endpoint_text(self.proto, socks.family_of(self.host), self.host, self.port)

    def stop(self) -> None:
        """Ask run() to stop, from any thread; a second call stops the
        children with SIGKILL at once instead of waiting for them."""
        # No lock: this also runs as a signal handler, on the main thread,
        # possibly while that thread is in the middle of run().
        self._stop_requests += 1
        wake = self._wake
        if wake is not None:
            try:
                wake.writer.send(b"\0")
            except OSError:  # closed: run() has returned
                pass

    def run(self) -> int:
        """Start everything, supervise until SIGTERM/SIGINT or stop(), then
        stop the children, unregister the members and unload the group if
        this launcher created it and no one else is in it.  Returns 0.

        Any exception on the way (the controller refusing a registration,
        say) stops and reaps every child before it propagates.
        """
        self.open()
        restore = self._install_signals()
        try:
            try:
                self.start()
                while not self._stopping():
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
        self._wake = socks.SelfPipe()
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._wake.reader, selectors.EVENT_READ, None)

    def start(self) -> None:
        """Make the sockets, start and register the children, attach the program."""
        self._start()

    def fileno(self) -> int:
        """Readable when a child exited or stop() was called: time to step()."""
        return self._sel.fileno()

    def next_due(self) -> Optional[float]:
        """Seconds until the next restart is due; None when none is."""
        now = time.monotonic()
        due = [m.restart_at for m in self.members if m.restart_at is not None]
        if any(m.retiring for m in self.members):
            due.append(now + RETIRE_POLL)
        return max(0.0, min(due) - now) if due else None

    def step(self, timeout: Optional[float] = 0.0) -> None:
        """Wait up to `timeout` (None: until something happens) for a child's
        exit, handle the exits, and restart the children whose time came."""
        for key, _ in self._sel.select(timeout):
            if key.data is None:
                self._wake.drain()
            elif not self._stopping():
                self._on_exit(key.data)
        if self._stopping():
            return
        now = time.monotonic()
        for m in self.members:
            if m.restart_at is not None and m.restart_at <= now and not m.retiring:
                self._restart(m)
        retiring = [m for m in self.members if m.retiring]
        if retiring:
            self._retire(retiring, now)

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
                    groups.set_draining(name, False, group=self.group)
                changes.append(f"{name} kept")
        added = [name for name in wanted if name not in have]
        if added:
            self._check_free(added, views.read_view(self.group, with_queues=False).members)
        for name in added:
            changes.append(self._add(name))
        for m in self.members:
            if m.name not in wanted and not m.retiring:
                m.retire_by = time.monotonic() + RETIRE_TIMEOUT
                if m.registered:
                    groups.set_draining(m.name, True, force=True, group=self.group)
                changes.append(f"{m.name} drained, to stop")
        self.names = wanted
        return changes

    def close(self) -> None:
        """Stop the children, unregister, unload (see _shutdown), then close the selector."""
        if self._sel is None:
            return
        try:
            self._shutdown()
        finally:
            self._sel.close()
            self._sel = None
            wake, self._wake = self._wake, None
            wake.close()

    # Signals -------------------------------------------------------------------

    def _install_signals(self) -> Callable[[], None]:
        """SIGTERM/SIGINT become stop requests that wake the selector.  Only
        the main thread may install handlers; elsewhere stop() is the way."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def on_signal(signum, frame):
            self.stop()

        old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}

        def restore() -> None:
            for s, handler in old.items():
                signal.signal(s, handler)

        return restore

    def _stopping(self) -> bool:
        return self._stop_requests > 0

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

    def _resolve_group(self, info: socks.SocketInfo) -> None:
        """Find the group of this address (or the one named) and refuse names
        a live member already has: two launchers must not steal each other's
        members.  A member whose socket is gone is taken over."""
        if self.group is None:
            self.group = groups.find_group_for(info.key) or groups.default_group_name(info.key)
        try:
            view = views.read_view(self.group, with_queues=False)
        except NotFound:
            self._assign_quic_ids(self.options.resolved(info.proto), [])
            return  # a new group
        with groups.Group.open(self.group) as g:
            own = g.options()
        self.options.check_against(self.group, own)
        self._assign_quic_ids(own, view.members)
        self._check_free(self.names, view.members)

    def _check_free(self, names: Sequence[str], present: Sequence[views.MemberView]) -> None:
        """Refuse names a live member of the group (`present`) has: two launchers
        must not steal each other's members.  A member whose socket is gone is taken over."""
        for m in present:
            if m.name in names and not m.gone:
                raise InvalidInput(
                    f"run: group {self.group!r} already has a live member {m.name!r} (pid {m.pid}); "
                    "choose other names with ", Param("name_format", "Launcher"),
                )

    def _add(self, name: str) -> str:
        """Start and register one more member while running."""
        m = self._new_member(name)
        if self.options.quic:
            with groups.Group.open(self.group) as g:
                own = g.options()
            self._assign_quic_ids(own, views.read_view(self.group, with_queues=False).members)
        self._launch(m)
        return f"{name} added"

    def _new_member(self, name: str) -> Member:
        sock = self._make_socket()
        m = Member(name, sock, self.backoff_initial, cookie=socks.cookie_of(sock))
        self.members.append(m)
        return m

    def _launch(self, m: Member) -> None:
        """Spawn m's child and register it.  A child that exited already is
        not an error: its exit is handled (and the restart scheduled) by step()."""
        self._spawn(m)
        try:
            self._register(m, replace=True)
        except RpctlError:
            if not self._exited(m):
                raise

    def _assign_quic_ids(self, options: GroupOptions, present: Sequence[views.MemberView]) -> None:
        """In a QUIC group, each member's server id before its first child
        starts (the child reads it from RPCTL_QUIC_SERVER_ID), as the group
        gives it (groups.quic_server_id): the one a member of that name has,
        else the lowest one free.  Registering the child then asks for it."""
        if not options.quic:
            return
        length = options.quic_server_id_length
        held = {m.name: quic.parse_server_id(m.quic_server_id, length) for m in [*present, *self.members]
                if m.quic_server_id is not None}
        for m in self.members:
            if m.quic_server_id is None:
                held[m.name] = groups.quic_server_id(held, m.name, None, length)
                m.quic_server_id = quic.format_server_id(held[m.name], length)

    def _start(self) -> None:
        for name in self.names:
            self._new_member(name)
        self._resolve_group(socks.inspect(self.members[0].sock))
        for m in self.members:
            if self._stopping():
                return
            self._launch(m)
        if not any(m.registered for m in self.members):
            raise RpctlError(f"run: every child of {self.argv[0]} exited before it could be registered")
        with groups.Group.open(self.group) as g:
            attached = g.attach_any(m.sock for m in self.members)
        if not attached:
            raise RpctlError(f"run: could not attach the program of group {self.group!r}")
        self._attached = True
        how = "created" if self.created else "joined"
        plural = "" if len(self.members) == 1 else "s"
        log.info("%s group %s on %s with %d member%s", how, self.group, self.endpoint, len(self.members), plural)

    def _spawn(self, m: Member) -> None:
        env = dict(self.env, LISTEN_FDS="1", LISTEN_FDNAMES=m.name, RPCTL_MEMBER=m.name)
        if m.quic_server_id is not None:
            env[quic.SERVER_ID_VAR] = m.quic_server_id
        argv = [expand_name(a, m.name) for a in self.argv]
        wrapper = [sys.executable, "-I", "-S", "-c", _EXEC_WRAPPER, str(os.getpid()), *argv]
        actions = [(os.POSIX_SPAWN_DUP2, m.sock.fileno(), LISTEN_FD)]
        if self.child_stdout is not None:
            actions.append((os.POSIX_SPAWN_OPEN, 1, self.child_stdout, os.O_WRONLY | os.O_APPEND, 0))
        pid = os.posix_spawn(
            sys.executable,
            wrapper,
            env,
            file_actions=actions,
            setpgroup=0,
            setsigmask=(),
            # Python ignores these; the child must start with the defaults.
            setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
        )
        m.pid = pid
        m.started = time.monotonic()
        m.restart_at = None
        try:
            m.pidfd = os.pidfd_open(pid)
        except OSError:
            # Cannot happen for our own unreaped child; kill it rather than lose track of it.
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            m.pid = 0
            raise
        self._sel.register(m.pidfd, selectors.EVENT_READ, m)
        log.info("started %s (pid %d)", m.name, pid)

    def _register(self, m: Member, replace: bool) -> None:
        """Make the child's fd 3 the member's socket (it is the launcher's
        socket, so replacing keeps the member's index, weight and counters)."""
        if self._attached:
            # Once running, a missing group means someone unloaded it: back to
            # the kernel's own selection, as they asked.  register() would make
            # a new group of this one member, which would then get everything.
            groups.resolve_group(self.group)
        r = groups.register(m.name, m.pid, LISTEN_FD, group=self.group, weight=self.weight,
                            replace=replace, attach=False, options=self.options,
                            quic_server_id=m.quic_server_id)
        m.registered = True
        self.created = self.created or r.created

    def _exited(self, m: Member) -> bool:
        return m.pidfd < 0 or pidfd_exited(m.pidfd)

    # Supervise ---------------------------------------------------------------------

    def _reap(self, m: Member) -> int:
        self._sel.unregister(m.pidfd)
        os.close(m.pidfd)
        m.pidfd = -1
        _, status = os.waitpid(m.pid, 0)
        return status

    def _on_exit(self, m: Member) -> None:
        pid = m.pid
        status = self._reap(m)
        lived = time.monotonic() - m.started
        m.pid = 0
        if m.retiring:
            log.info("%s (pid %d) %s", m.name, pid, describe_exit(status))
            self._retired(m)
            return
        # First thing: no new connection for a socket no one accepts on.
        if m.registered:
            self._drain_dead(m)
        if lived >= STABLE_AFTER:
            m.backoff = self.backoff_initial
        if m.operator_drained and lived >= PLANNED_MIN_LIFE:
            # Drained before it exited: a planned stop (`rpctl restart`), not a
            # crash.  The replacement starts at once; the backoff is for crashes.
            delay = 0.0
        else:
            delay = m.backoff
            m.backoff = min(m.backoff * 2, self.backoff_max)
        m.restart_at = time.monotonic() + delay
        log.info("%s (pid %d) %s; restarting in %gs", m.name, pid, describe_exit(status), delay)

    def _drain_dead(self, m: Member) -> None:
        try:
            m.operator_drained = groups.is_draining(m.name, group=self.group)
            if not m.operator_drained:
                groups.set_draining(m.name, True, force=True, group=self.group)
        except RpctlError as e:
            log.warning("%s: could not drain it: %s", m.name, e)

    def _restart(self, m: Member) -> None:
        m.restarts += 1
        try:
            self._spawn(m)
        except OSError as e:
            delay = m.backoff
            m.backoff = min(m.backoff * 2, self.backoff_max)
            m.restart_at = time.monotonic() + delay
            log.warning("%s: cannot start it: %s; retrying in %gs", m.name, e.strerror or e, delay)
            return
        try:
            self._register(m, replace=True)
        except RpctlError as e:
            # If the child died already its exit comes through the selector;
            # otherwise it serves what is queued on its socket but gets no new
            # connection until someone registers it.
            log.warning("%s (pid %d): could not register it again: %s", m.name, m.pid, e)
            return
        if m.operator_drained:
            log.info("%s (pid %d) registered again; left drained as it was before", m.name, m.pid)
            return
        try:
            groups.set_draining(m.name, False, group=self.group)
        except RpctlError as e:
            log.warning("%s: could not undrain it: %s", m.name, e)
            return
        log.info("%s (pid %d) registered again and undrained", m.name, m.pid)

    # Retire (resize) -----------------------------------------------------------------

    def _retire(self, retiring: Sequence[Member], now: float) -> None:
        """Stop the children of drained retiring members (or of those whose
        time is up), and kill those that ignore SIGTERM."""
        try:
            states = {v.name: v.state for v in views.read_view(self.group, with_queues=True).members}
        except RpctlError as e:
            log.warning("could not read group %s: %s", self.group, e)
            states = {}
        for m in retiring:
            if not m.pid:
                if m.restart_at is not None:  # died while retiring, before it was stopped
                    self._retired(m)
                continue
            if m.stop_by is None and (states.get(m.name) == views.DRAINED or now >= m.retire_by):
                # Our copy first: the child's close is then the last one.
                m.sock.close()
                os.kill(m.pid, signal.SIGTERM)
                m.stop_by = now + STOP_TIMEOUT
                log.info("%s (pid %d) %s: stopping it", m.name, m.pid,
                         "drained" if states.get(m.name) == views.DRAINED else "not drained in time")
            elif m.stop_by is not None and now >= m.stop_by:
                os.kill(m.pid, signal.SIGKILL)

    def _retired(self, m: Member) -> None:
        """A retiring member's child is gone: unregister it, forget it."""
        m.sock.close()
        self.members.remove(m)
        try:
            groups.unregister(m.name, group=self.group)
        except NotFound:
            pass
        except RpctlError as e:
            log.warning("%s: could not unregister it: %s", m.name, e)
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
            self._stop_children()
        finally:
            self._kill_children()
        for m in self.members:
            if not m.registered:
                continue
            try:
                groups.unregister(m.name, group=self.group)
                m.registered = False
            except NotFound:
                m.registered = False
            except RpctlError as e:
                log.warning("%s: could not unregister it: %s", m.name, e)
        if self.created and self.group is not None:
            self._unload_if_empty()

    def _stop_children(self) -> None:
        running = [m for m in self.members if m.pid]
        if running:
            log.info("stopping %d children", len(running))
        requests = self._stop_requests
        for m in running:
            try:
                os.kill(m.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + STOP_TIMEOUT
        while any(m.pid for m in self.members):
            left = deadline - time.monotonic()
            if left <= 0:
                return
            for key, _ in self._sel.select(left):
                if key.data is None:
                    self._wake.drain()
                    if self._stop_requests > requests:
                        log.info("asked again: killing the children")
                        return
                else:
                    m = key.data
                    pid = m.pid
                    status = self._reap(m)
                    m.pid = 0
                    log.info("%s (pid %d) %s", m.name, pid, describe_exit(status))

    def _kill_children(self) -> None:
        for m in self.members:
            if not m.pid:
                continue
            pid = m.pid
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            if m.pidfd >= 0:
                try:
                    self._sel.unregister(m.pidfd)
                except (KeyError, ValueError):
                    pass
                os.close(m.pidfd)
                m.pidfd = -1
            try:
                _, status = os.waitpid(pid, 0)
            except ChildProcessError:
                status = None
            m.pid = 0
            log.info("%s (pid %d) %s", m.name, pid, "killed" if status is None else describe_exit(status))

    def _unload_if_empty(self) -> None:
        try:
            view = views.read_view(self.group, with_queues=False)
            if view.members:
                log.info("left group %s in place: %d other members are in it", self.group, len(view.members))
                return
            groups.unload(group=self.group)
            log.info("unloaded group %s", self.group)
        except NotFound:
            pass
        except RpctlError as e:
            log.warning("could not unload group %s: %s", self.group, e)
