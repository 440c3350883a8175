"""Children that each run a command on a socket handed to them: spawned, reaped, restarted, stopped.

The process supervisor under `rpctl run`, and nothing more: it knows a child
by its name, the socket it is handed and the process running it, not what
the child is a member of (controller/ops/launcher.py decides that).  A child
gets its socket as systemd's socket activation gives one: fd 3 with
LISTEN_FDS=1, LISTEN_PID=<that process> and LISTEN_FDNAMES=<its name>.

Children are started through a tiny Python wrapper (posix_spawn, then
exec): it sets LISTEN_PID to its own pid, which the exec keeps, so that
LISTEN_PID is the pid that runs the command.  What becomes of the children
when the supervising process is SIGKILLed is the owner's choice:

* `rpctl run` (outlive=False): the wrapper asks the kernel to SIGKILL the
  child when the supervisor dies (PR_SET_PDEATHSIG), so that not even a
  SIGKILLed run leaves children behind.  Each child gets its own process
  group: a Ctrl-C in a terminal reaches the supervisor alone, which then
  stops the children in order.
* `rpctl serve` (outlive=True, decision 0025): the children go on serving
  through the death of serve (an OOM kill) and the next serve takes them
  back (adopt()) by their registration.  So a child must not outlive its
  supervisor before it is registered: the wrapper arms PR_SET_PDEATHSIG as
  above, waits on a pipe (fd 4) until release() says the child is
  registered, and only then disarms it and execs.  Each child gets its own
  session, not only its own process group: a process group left without
  its parent in the session is sent SIGHUP by the kernel if a member of it
  is stopped (SIGSTOP) then.

Exits are seen through pidfds in one selector, beside a self-pipe that
stop() writes to, from any thread or a signal handler.  A child taken back
is not ours to reap: its pidfd says when it exits, not how.
"""

from __future__ import annotations

import logging
import os
import selectors
import shutil
import signal
import socket
import sys
import time
from dataclasses import dataclass
from typing import Callable, Mapping, NamedTuple, Optional, Sequence

from ..kernel import sockets as socks
from ..kernel.process import describe_exit, on_signals, pidfd_exited, stop_signals
from .run_defaults import BACKOFF_INITIAL, BACKOFF_MAX, STABLE_AFTER, STOP_TIMEOUT

LISTEN_FD = 3  # SD_LISTEN_FDS_START: where a child finds its socket

# The children's starts and exits: INFO.
log = logging.getLogger("rpctl.supervisor")

# Inherited activation variables would describe the supervisor's own fds.
_ACTIVATION_VARS = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")

_PR_SET_PDEATHSIG = 1
_DIE_WITH_SUPERVISOR = "die"     # the wrapper's second argument: die with the supervisor
_OUTLIVE_SUPERVISOR = "outlive"  # ... or, once released through fd GATE_FD, outlive it
GATE_FD = 4                      # where an outliving child's wrapper waits for release()
_RELEASED = b"1"
# Run as `python -I -S -c WRAPPER <supervisor pid> die|outlive CMD...`.
# Checking the parent after prctl closes the window in which the supervisor
# died before the death signal was armed.
_EXEC_WRAPPER = f"""\
import ctypes, os, sys
prctl = ctypes.CDLL(None).prctl
prctl({_PR_SET_PDEATHSIG}, {int(signal.SIGKILL)}, 0, 0, 0)
if os.getppid() != int(sys.argv[1]):
    os._exit(1)
if sys.argv[2] == "{_OUTLIVE_SUPERVISOR}":
    released = os.read({GATE_FD}, 1) == {_RELEASED!r}
    os.close({GATE_FD})
    if not released:
        os._exit(1)
    prctl({_PR_SET_PDEATHSIG}, 0, 0, 0, 0)
os.environ["LISTEN_PID"] = str(os.getpid())
try:
    os.execvp(sys.argv[3], sys.argv[3:])
except OSError as e:
    sys.stderr.write("rpctl run: cannot run %s: %s\\n" % (sys.argv[3], e.strerror))
    os._exit(127)
"""


@dataclass
class Child:
    """One child: its name, the supervisor's copy of the socket it is handed, its process."""

    name: str
    sock: socket.socket
    backoff: float                 # the wait before its next restart after a crash
    pid: int = 0                   # 0 while no process runs
    pidfd: int = -1
    started: float = 0.0           # time.monotonic() at spawn
    restart_at: Optional[float] = None
    restarts: int = 0
    stop_by: Optional[float] = None  # its process was sent SIGTERM: SIGKILL after this
    own: bool = True               # our child (reaped with waitpid); False: taken back with adopt()
    gate: int = -1                 # outlive: the pipe its wrapper waits on until release()


class Exit(NamedTuple):
    """A child's process, reaped: which it was, how it ended, how long it ran."""

    pid: int
    how: str                       # "exited 1", "killed by SIGTERM", ...
    lived: float                   # seconds (of a child taken back: since it was taken back)


# How a child taken back ended: only its parent (init, or a subreaper) could tell.
_UNKNOWN_EXIT = "exited (how is not known: it was taken back from a supervisor that died)"


def _how(status: Optional[int]) -> str:
    return _UNKNOWN_EXIT if status is None else describe_exit(status)


class Supervisor:
    """Spawn, watch, restart and stop children; open() before, close() after."""

    def __init__(
        self,
        backoff_initial: float = BACKOFF_INITIAL,
        backoff_max: float = BACKOFF_MAX,
        child_stdout: Optional[str] = None,
        outlive: bool = False,
    ):
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        # The children go on running when this process is SIGKILLed (see the module's text).
        self.outlive = outlive
        # A file the children's stdout goes to instead of the supervisor's own.
        self.child_stdout = child_stdout
        self.env = {k: v for k, v in os.environ.items() if k not in _ACTIVATION_VARS}
        self._sel: Optional[selectors.BaseSelector] = None
        self._wake: Optional[socks.SelfPipe] = None
        self._stop_requests = 0

    def finds(self, command: str) -> bool:
        """Whether `command` is a file a child can run (on the children's PATH)."""
        return shutil.which(command, path=self.env.get("PATH", os.defpath)) is not None

    # Open, wait, close ------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._sel is not None

    def open(self) -> None:
        """Make the selector that watches the children."""
        self._wake = socks.SelfPipe()
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._wake.reader, selectors.EVENT_READ, None)

    def fileno(self) -> int:
        """Readable when a child exited or stop() was called."""
        return self._sel.fileno()

    def wait(self, timeout: Optional[float]) -> list[Child]:
        """Wait up to `timeout` (None: until something happens) for a child's
        exit or a stop request; the children whose process exited, not reaped yet."""
        exited = []
        for key, _ in self._sel.select(timeout):
            if key.data is None:
                self._wake.drain()
            else:
                exited.append(key.data)
        return exited

    def close(self) -> None:
        """Close the selector (stop_all and kill_all first: no child is watched after this)."""
        self._sel.close()
        self._sel = None
        wake, self._wake = self._wake, None
        wake.close()

    # Stop requests ----------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the children's owner to stop, from any thread; a second call
        makes stop_all() give up waiting, so that kill_all() follows at once."""
        # No lock: this also runs as a signal handler, on the main thread,
        # possibly while that thread is in the middle of a wait.
        self._stop_requests += 1
        wake = self._wake
        if wake is not None:
            try:
                wake.writer.send(b"\0")
            except OSError:  # closed: the supervisor is done
                pass

    @property
    def stopping(self) -> bool:
        return self._stop_requests > 0

    def install_signals(self) -> Callable[[], None]:
        """The stop signals (SIGTERM, SIGINT, SIGHUP: a closed terminal stops the children
        as cleanly as Ctrl-C) become stop requests; returns what restores the old handlers.
        Only the main thread may install handlers; elsewhere stop() is the way."""
        return on_signals(lambda signum, frame: self.stop(), stop_signals())

    # A child's process ------------------------------------------------------------------

    def spawn(self, child: Child, argv: Sequence[str], env: Mapping[str, str]) -> None:
        """Start `argv` as the child's process, its socket on fd 3, `env` added
        to the inherited environment; OSError when it cannot be started."""
        env = {**self.env, "LISTEN_FDS": "1", "LISTEN_FDNAMES": child.name, **env}
        death = _OUTLIVE_SUPERVISOR if self.outlive else _DIE_WITH_SUPERVISOR
        wrapper = [sys.executable, "-I", "-S", "-c", _EXEC_WRAPPER, str(os.getpid()), death, *argv]
        actions = [(os.POSIX_SPAWN_DUP2, child.sock.fileno(), LISTEN_FD)]
        if self.child_stdout is not None:
            actions.append((os.POSIX_SPAWN_OPEN, 1, self.child_stdout, os.O_WRONLY | os.O_APPEND, 0))
        gate_reader = -1
        if self.outlive:
            gate_reader, child.gate = os.pipe()
            actions.append((os.POSIX_SPAWN_DUP2, gate_reader, GATE_FD))
        try:
            pid = os.posix_spawn(
                sys.executable,
                wrapper,
                env,
                file_actions=actions,
                **({"setsid": True} if self.outlive else {"setpgroup": 0}),
                setsigmask=(),
                # Python ignores these; the child must start with the defaults.
                setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
            )
        except BaseException:
            self._close_gate(child)
            raise
        finally:
            if gate_reader >= 0:
                os.close(gate_reader)
        child.pid = pid
        child.own = True
        child.started = time.monotonic()
        child.restart_at = None
        try:
            child.pidfd = os.pidfd_open(pid)
        except OSError:
            # Cannot happen for our own unreaped child; kill it rather than lose track of it.
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            child.pid = 0
            raise
        self._sel.register(child.pidfd, selectors.EVENT_READ, child)
        log.info("started %s (pid %d)", child.name, pid)

    def release(self, child: Child) -> None:
        """Let an outliving child's wrapper exec its command, no longer dying with
        us: once it is registered, the next supervisor can take it back.  Nothing
        for a child that dies with us, or one released already."""
        if child.gate >= 0:
            try:
                os.write(child.gate, _RELEASED)
            except BrokenPipeError:
                pass  # it died already: its exit comes through the selector
            self._close_gate(child)

    @staticmethod
    def _close_gate(child: Child) -> None:
        """Close the gate unwritten (a wrapper still waiting exits 1) or written."""
        if child.gate >= 0:
            os.close(child.gate)
            child.gate = -1

    def forget(self, child: Child) -> None:
        """Stop watching a child taken back with adopt(), leaving its process as it is."""
        if child.pidfd >= 0:
            self._sel.unregister(child.pidfd)
            os.close(child.pidfd)
            child.pidfd = -1
        child.pid = 0

    def adopt(self, child: Child, pid: int, pidfd: int) -> None:
        """Watch process `pid` (through `pidfd`, which the child now owns) as the
        child's process: one a supervisor that died had started.  It is not
        our child: its exit is seen, not reaped."""
        child.pid = pid
        child.pidfd = pidfd
        child.own = False
        child.started = time.monotonic()
        child.restart_at = None
        self._sel.register(pidfd, selectors.EVENT_READ, child)

    def exited(self, child: Child) -> bool:
        """Whether the child's process is gone (or never ran)."""
        return child.pidfd < 0 or pidfd_exited(child.pidfd)

    def reap(self, child: Child) -> Exit:
        """Collect the child's exited process.  One that lived STABLE_AFTER
        starts its restart backoff over."""
        pid = child.pid
        status = self._collect(child)
        lived = time.monotonic() - child.started
        if lived >= STABLE_AFTER:
            child.backoff = self.backoff_initial
        return Exit(pid, _how(status), lived)

    def schedule_restart(self, child: Child, at_once: bool = False) -> float:
        """When the child's next process starts: at once, or after its backoff,
        which then doubles up to backoff_max.  Returns the wait in seconds."""
        if at_once:
            delay = 0.0
        else:
            delay = child.backoff
            child.backoff = min(child.backoff * 2, self.backoff_max)
        child.restart_at = time.monotonic() + delay
        return delay

    def terminate(self, child: Child, now: float) -> None:
        """SIGTERM to the child's process; kill_overdue() sends SIGKILL STOP_TIMEOUT later."""
        _signal(child, signal.SIGTERM)
        child.stop_by = now + STOP_TIMEOUT

    def kill_overdue(self, child: Child, now: float) -> None:
        """SIGKILL to a terminated child's process that is still there after STOP_TIMEOUT."""
        if child.stop_by is not None and now >= child.stop_by:
            _signal(child, signal.SIGKILL)

    # All of them ------------------------------------------------------------------------

    def stop_all(self, children: Sequence[Child]) -> None:
        """SIGTERM to every running child, then reap them as they exit, for
        STOP_TIMEOUT at most; a new stop request ends the wait at once."""
        running = [c for c in children if c.pid]
        if running:
            log.info("stopping %d children", len(running))
        requests = self._stop_requests
        for c in running:
            _signal(c, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while any(c.pid for c in children):
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
                    c = key.data
                    pid = c.pid
                    status = self._collect(c)
                    log.info("%s (pid %d) %s", c.name, pid, _how(status))

    def kill_all(self, children: Sequence[Child]) -> None:
        """SIGKILL to every child still running, and reap it: none survives this."""
        for c in children:
            if not c.pid:
                continue
            pid = c.pid
            _signal(c, signal.SIGKILL)
            self._close_gate(c)
            status = None
            if c.own:
                try:
                    _, status = os.waitpid(pid, 0)
                except ChildProcessError:
                    pass
            elif c.pidfd >= 0:
                pidfd_exited(c.pidfd, STOP_TIMEOUT)  # SIGKILL is not refused: this is a moment
            if c.pidfd >= 0:
                try:
                    self._sel.unregister(c.pidfd)
                except (KeyError, ValueError):
                    pass
                os.close(c.pidfd)
                c.pidfd = -1
            c.pid = 0
            log.info("%s (pid %d) %s", c.name, pid, "killed" if status is None else describe_exit(status))

    def _collect(self, child: Child) -> Optional[int]:
        """Stop watching the child's exited process and reap it: its wait status
        (None for a child taken back: its parent reaps it)."""
        self._sel.unregister(child.pidfd)
        os.close(child.pidfd)
        child.pidfd = -1
        self._close_gate(child)
        status = os.waitpid(child.pid, 0)[1] if child.own else None
        child.pid = 0
        return status


def _signal(child: Child, signum: int) -> None:
    """Send `signum` to the child's process, through its pidfd when it has one: the
    pid of a child taken back may be another process's once it has exited."""
    if child.pidfd >= 0:
        send_signal(child.pidfd, signum)
        return
    try:
        os.kill(child.pid, signum)
    except ProcessLookupError:
        pass


def send_signal(pidfd: int, signum: int) -> None:
    """`signum` to the process of `pidfd`; nothing when it has exited."""
    try:
        signal.pidfd_send_signal(pidfd, signum)
    except ProcessLookupError:
        pass
