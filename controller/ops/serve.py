"""`rpctl serve`: one long-running process that keeps every group of a file true to it.

The loop here looks at every group each INTERVAL through its keeper
(controller/ops/keepers.py), all of them through one look at the network
namespace (controller/ops/watch.py: one sock_diag dump, not one per group):
an adopted group (`adopt = {...}`) is watched and reconciled when it
changed, and checked at least every RESYNC seconds; a group with `run =
{...}` is launched and supervised by a Launcher, as `rpctl run` does, and
its weights, drains and pin from the file are applied when the file is read.
A group with `adaptive = true` also gets its sampling loop
(controller/ops/adaptive_loop.py), which the loop wakes for; the groups
sampled at one moment share one dump.

Signals: SIGHUP rereads the file (a file that does not load is logged and
the last good one stays in force); SIGTERM and SIGINT stop serve, which
leaves every adopted group steering as it is (its state is pinned) and
stops the children of its run groups as `rpctl run` does.  A second
SIGTERM kills those children at once.  A SIGKILLed serve changes nothing:
every write is one publish, and serve keeps no socket of an adopted group;
the children of run groups go on serving (they are started to outlive serve,
decision 0025) and the next serve takes them back (controller/ops/orphans.py)
or, for those that died meanwhile, starts new ones under the same names; an
adaptive group's throttle ends with its lease.

Every CLEANUP seconds (and at the start) serve also removes the state
folders of network namespaces that no longer exist (controller/store/stale_state.py,
what `rpctl cleanup` does).

A service manager hears READY=1 after the first full reconcile of every
group, RELOADING=1 and READY=1 around a reread, STOPPING=1 at the end.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import threading
import time
from dataclasses import dataclass
from typing import Mapping, Optional

from ..contract.errors import RpctlError
from ..kernel import probe, sockets, system_log
from ..store.state import Layout
from . import config, notify
from .config_spec import GroupSpec
from .keepers import RESYNC, Keeper, keeper_for
from .watch import Look, Quiet

__all__ = ["INTERVAL", "RESYNC", "Serve"]

INTERVAL = 0.2   # seconds between two looks at every group: a change is acted on within this
CLEANUP = 300.0  # seconds between two sweeps of dead namespaces' state folders (a /proc scan)

log = logging.getLogger("rpctl.serve")


@dataclass
class _Requests:
    """What the signal handlers asked for, read by the loop."""

    reload: int = 0
    stop: int = 0


class Serve:
    """Keep the groups of the file at `path` true to it until stop()."""

    def __init__(self, path: str, layout: Optional[Layout] = None, interval: float = INTERVAL,
                 environ: Mapping[str, str] = os.environ):
        self.path = path
        self.layout = layout
        self.interval = interval
        self.environ = environ
        self.keepers: dict[str, Keeper] = {}
        self._parents: list[Keeper] = []   # the keepers with children to supervise (run groups)
        self._sampling: list[Keeper] = []  # the keepers with an adaptive loop to run or to end
        self._sampled_ports: frozenset[int] = frozenset()
        self.config = None
        self._requests = _Requests()
        self._wake: Optional[sockets.SelfPipe] = None
        self._sel: Optional[selectors.BaseSelector] = None
        self._next_cleanup = 0.0
        self._next_look = 0.0
        self._adapt_due: float | None = None
        self._quiet: Optional[Quiet] = None  # what every group waits for, as the last look at all of them found it
        self._cleanup_failed: Optional[str] = None

    # Requests (signal handlers, other threads) ----------------------------------

    def reload(self) -> None:
        self._requests.reload += 1
        self._poke()

    def stop(self) -> None:
        """Stop serving; asked again, the children of run groups are killed at once."""
        self._requests.stop += 1
        if self._requests.stop > 1:
            for k in list(self.keepers.values()):
                k.stop_now()
        self._poke()

    def _poke(self) -> None:
        wake = self._wake
        if wake is not None:
            try:
                wake.writer.send(b"\0")
            except OSError:
                pass

    # The loop ---------------------------------------------------------------------

    def run(self) -> int:
        """Load the file (an error here is raised: nothing was started), keep
        its groups until SIGTERM/SIGINT or stop(), return 0."""
        cfg = config.load(self.path)  # a bad file is its one line, before anything else is asked
        probe.require_kernel()
        probe.require_bpf_privileges("serve")
        self.layout = self.layout or Layout()
        system_log.set_command("serve")  # the audit trail's "who" of every change serve makes
        self._wake = sockets.SelfPipe()
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._wake.reader, selectors.EVENT_READ, None)
        restore = self._install_signals()
        try:
            try:
                self._apply(cfg)
                notify.notify(notify.READY, self.environ)
                log.info("serving %s from %s", _count(len(self.keepers), "group"), self.path)
                self._loop()
            finally:
                notify.notify(notify.STOPPING, self.environ)
                self._close_all()
        finally:
            restore()
            self._sel.close()
            wake, self._wake = self._wake, None
            wake.close()
        log.info("stopped")
        return 0

    def _install_signals(self):
        """SIGTERM/SIGINT stop, SIGHUP rereads.  The wake-up fd makes a signal
        that lands on another thread (the exporter's) wake the loop at once."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        handlers = {signal.SIGTERM: self.stop, signal.SIGINT: self.stop, signal.SIGHUP: self.reload}
        old = {s: signal.signal(s, lambda signum, frame, fn=fn: fn()) for s, fn in handlers.items()}
        old_wakeup = signal.set_wakeup_fd(self._wake.writer.fileno(), warn_on_full_buffer=False)

        def restore() -> None:
            signal.set_wakeup_fd(old_wakeup)
            for s, handler in old.items():
                signal.signal(s, handler)

        return restore

    def _loop(self) -> None:
        # The file was read before the handlers were installed: a SIGHUP
        # since then (one during the first apply, say) rereads it.
        done_reloads = 0
        while not self._requests.stop:
            for key, _ in self._sel.select(self._timeout()):
                if key.data is None:
                    self._wake.drain()
            if self._requests.stop:
                return
            if self._requests.reload != done_reloads:
                done_reloads = self._requests.reload
                self._reread()
            self._tick()

    def _timeout(self) -> float:
        now = time.monotonic()
        due = [max(0.0, self._next_look - now)]
        if self._adapt_due is not None:
            due.append(max(0.0, self._adapt_due - now))
        for k in self._parents:
            d = k.next_due()
            if d is not None:
                due.append(d)
        return min(due)

    def _tick(self, force: bool = False) -> None:
        now = time.monotonic()
        if now >= self._next_cleanup:
            self._next_cleanup = now + CLEANUP
            self._cleanup()
        # The groups are looked at every interval (or when forced); the
        # loop also wakes for launchers' children and adaptive samples.
        looking = force or now >= self._next_look
        if looking:
            self._next_look = now + self.interval
        look = Look()  # one for every group: each dump, pid and discover read once
        if looking and not force and self._still_quiet(look, now):
            looking = False  # every group would find what it found last time
        for k in self._parents:
            k.supervise()
        failed = False
        for k in list(self.keepers.values()) if looking else ():
            try:
                k.tick(now, look, force)
            except (RpctlError, OSError) as e:
                log.warning("group %s: cannot look at it: %s", k.name, e)
                failed = True
        if looking:
            self._quiet = None if failed else Quiet.of(look, (k.waits() for k in self.keepers.values()))
        now = time.monotonic()
        if look.taken is None or not look.fresh(now):
            # A sample on its own (or after a slow look) reads the sampled groups' ports alone.
            look = Look(self._sampled_ports or None)
        self._adapt(now, look)

    def _still_quiet(self, look: Look, now: float) -> bool:
        try:
            return self._quiet is not None and self._quiet.holds(look, now)
        except (RpctlError, OSError):
            return False  # each group says what it cannot look at

    def _adapt(self, now: float, look: Look) -> None:
        dues = [d for d in (k.adapt(now, look) for k in self._sampling) if d is not None]
        self._adapt_due = min(dues) if dues else None

    def _cleanup(self) -> None:
        """Remove the state folders of network namespaces that no longer exist
        (what `rpctl cleanup` does); a refusal is logged once, not retried faster."""
        from ..store import stale_state

        try:
            removed = stale_state.remove_stale()
        except (RpctlError, OSError) as e:
            text = str(e)
            if text != self._cleanup_failed:
                log.warning("cannot remove the state of dead network namespaces: %s", e)
            self._cleanup_failed = text
            return
        self._cleanup_failed = None
        for folder in removed:
            groups_text = ", ".join(folder.groups) or "no group"
            log.info("removed the state of dead network namespace %s (%s)", folder.netns, groups_text)

    # The file -------------------------------------------------------------------------

    def _reread(self) -> None:
        notify.notify(notify.reloading(), self.environ)
        try:
            cfg = config.load(self.path)
        except RpctlError as e:
            log.warning("file not reread, the last good one stays in force: %s", e)
        else:
            log.info("rereading %s", self.path)
            self._apply(cfg)
        notify.notify(notify.READY, self.environ)

    def _apply(self, cfg: config.Config) -> None:
        """Make the keepers those of `cfg`'s groups, and reconcile each once."""
        wanted = {spec.name: spec for spec in cfg.groups}
        for name in [n for n in self.keepers if n not in wanted]:
            log.info("group %s: no longer in the file; left as it is", name)
            self._drop(name)
        for name, spec in wanted.items():
            old = self.keepers.get(name)
            if old is not None and not old.can_take(spec):
                log.info("group %s: its listen or run changed: taken up anew", name)
                self._drop(name)
                old = None
            if old is None:
                try:
                    self.keepers[name] = self._keeper(spec)
                except RpctlError as e:
                    log.warning("group %s: cannot start it: %s", name, e)
                    continue
            else:
                old.take(spec)
        self.config = cfg
        self._sort_keepers()
        if not cfg.groups:  # the file as installed: every example commented out
            log.info("%s names no group: idle until it does (then reload: SIGHUP)", self.path)
        self._tick(force=True)

    def _sort_keepers(self) -> None:
        """The keepers each kind of wake-up asks: a wake-up asks nothing of a group that has nothing to do then."""
        self._parents = [k for k in self.keepers.values() if k.has_children()]
        self._sampling = [k for k in self.keepers.values() if k.samples()]
        self._sampled_ports = frozenset(k.key.port for k in self._sampling)

    def _keeper(self, spec: GroupSpec) -> Keeper:
        k = keeper_for(spec, self.layout)
        for fd in k.fds():
            self._sel.register(fd, selectors.EVENT_READ, k)
        return k

    def _drop(self, name: str) -> None:
        k = self.keepers.pop(name)
        self._sort_keepers()
        for fd in k.fds():
            self._sel.unregister(fd)
        try:
            k.close()
        except RpctlError as e:
            log.warning("group %s: %s", name, e)

    def _close_all(self) -> None:
        for name in list(self.keepers):
            self._drop(name)


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"

