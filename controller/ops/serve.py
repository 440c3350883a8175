"""`rpctl serve`: one long-running process that keeps every group of a file true to it.

Adopted groups (`adopt = {...}`) are watched (controller/ops/watch.py): several
times a second one port-filtered sock_diag dump and a liveness check of the
members' pids; only when either differs from what the last reconcile left,
or every RESYNC seconds, the group is reconciled (controller/ops/reconcile.py:
one lock, one atomic publish).  Groups with `run = {...}` are launched and
supervised by a Launcher each, as `rpctl run` does; their weights,
drains and pin from the file are applied when the file is read.

Signals: SIGHUP rereads the file (a file that does not load is logged and
the last good one stays in force); SIGTERM and SIGINT stop serve, which
leaves every adopted group steering as it is (its state is pinned) and
stops the children of its run groups as `rpctl run` does.  A second
SIGTERM kills those children at once.  A SIGKILLed serve changes nothing:
every write is one publish, and serve keeps no socket of an adopted group;
the children of run groups die with it (as those of a SIGKILLed `rpctl
run`), and the next serve starts new ones under the same names.

Groups with `adaptive = true` get a control loop of their own (_Adaptive):
every `adaptive_interval_ms` one sock_diag dump of the port gives every
live member's queue (TCP: its accept queue; UDP: its receive queue, in
bytes, against `adaptive_queue_bytes`), controller/tables/adaptive.py decides who is
throttled, and the map "throttle" gets the answer with a lease of
adaptive.LEASE_MS; the program skips a throttled member while the lease
runs, so a serve that is SIGKILLed leaves the plain weights behind within
the lease (docs/decisions/0013).

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
from dataclasses import dataclass, replace
from typing import Mapping, Optional

from ..contract import abi
from ..contract.errors import RpctlError
from ..kernel import diag, probe, sockets
from ..read import views
from ..store import group as groups
from ..store.state import Layout
from ..tables import adaptive
from . import config, notify, reconcile, watch
from .launcher import Launcher

__all__ = ["INTERVAL", "RESYNC", "Serve"]

INTERVAL = 0.2   # seconds between two looks at every group: a change is acted on within this
RESYNC = 30.0    # seconds between two full reconciles of a group that looks unchanged
RETRY = 2.0      # after a reconcile failed, the next full one comes this soon
SOON = 0.2       # a listener no process serves yet (mid-reload): looked at again this soon, then 2x, 4x...
UNDECIDED_NOTE = 1.6  # ...and logged as not admitted once it stayed so this long
CLEANUP = 300.0  # seconds between two sweeps of dead namespaces' state folders (a /proc scan)
MEMBERS_AGE = 1.0  # an adaptive group's members (and its open maps) are read again this often
HEARTBEAT = 0.5  # with nobody throttled, the throttle map is still written this often: readers see serve sample

log = logging.getLogger("rpctl.serve")


class _Adaptive:
    """The control loop of one adaptive group: sample, decide, publish the throttle."""

    def __init__(self, name: str, layout: Layout):
        self.name = name
        self.layout = layout
        self.throttle = adaptive.Throttle()
        self.group: groups.Group | None = None
        self.live: dict[int, int] = {}   # member index -> socket cookie, of the live generation
        self.members: list[abi.RpMember] = []
        self.read_at = -MEMBERS_AGE
        self.next = 0.0
        self.published_empty = False     # the map says "nobody" already: only the heartbeat writes
        self.beat_at = -HEARTBEAT        # when the map was last written
        self.failed: str | None = None

    def step(self, now: float, settings: adaptive.Settings) -> float:
        """One sample if it is due; returns when the next one is."""
        if now < self.next:
            return self.next
        self.throttle.settings = settings
        self.next = now + settings.interval_ms / 1000
        try:
            if now - self.read_at >= MEMBERS_AGE:
                self._read_members(now)
            g = self.group
            ctl = g.ctl()
            depths = diag.queue_depths(ctl.proto, self.live.values(), ctl.port)
            by_index = {i: depths[c] for i, c in self.live.items() if c in depths}
            verdict = self.throttle.update(by_index, time.monotonic_ns())
            if verdict.throttled or not self.published_empty or now - self.beat_at >= HEARTBEAT:
                groups.put_throttle(g, verdict.throttled, verdict.lease_until_ns, time.monotonic_ns())
                self.published_empty = not verdict.throttled
                self.beat_at = now
        except (RpctlError, OSError) as e:
            text = str(e)
            if text != self.failed:
                log.warning("group %s: adaptive steering cannot sample or publish: %s", self.name, e)
            self.failed = text
            self._close_group()
            self.read_at = -MEMBERS_AGE
            return self.next
        self.failed = None
        names = self._names()
        for c in verdict.changes:
            log.info("group %s: %s %s (%s)", self.name, names.get(c.index, f"index {c.index}"),
                     "throttled" if c.throttled else "released", c.reason)
        return self.next

    def _read_members(self, now: float) -> None:
        """Open the group anew (it may have been unloaded and made again), make
        sure its program reads the throttle, and list the live members."""
        self._close_group()
        g = self.group = groups.Group.open(self.name, self.layout)
        if groups.set_adaptive(g, True):
            log.info("group %s: adaptive steering on", self.name)
        gen = g.ctl().gen & 1
        self.members = g.members()
        self.live = {
            i: m.cookie for i, m in enumerate(self.members)
            if m.flags & abi.RP_MEMBER_USED and m.policy[gen].flags & abi.RP_POLICY_PRESENT
            and not m.policy[gen].flags & abi.RP_POLICY_DRAINING and m.policy[gen].weight > 0
        }
        self.read_at = now

    def _names(self) -> dict[int, str]:
        return {i: self.members[i].name.decode(errors="replace") for i in self.live}

    def stale(self) -> None:
        """The group changed (a reconcile ran): read its members at the next sample."""
        self.read_at = -MEMBERS_AGE

    def _close_group(self) -> None:
        if self.group is not None:
            self.group.close()
            self.group = None

    def close(self) -> None:
        """Adaptive off (serve stops, or the file says so): nobody throttled, flag cleared."""
        try:
            with groups.Group.open(self.name, self.layout) as g:
                groups.put_throttle(g, {}, 0)
                if groups.set_adaptive(g, False):
                    log.info("group %s: adaptive steering off", self.name)
        except (RpctlError, OSError) as e:
            log.warning("group %s: cannot turn adaptive steering off (its lease ends it): %s", self.name, e)
        self._close_group()


def _settings(spec) -> adaptive.Settings:
    if spec.listen.proto == "udp":  # its receive queue, in bytes
        return adaptive.Settings(queue=spec.adaptive_queue_bytes, interval_ms=spec.adaptive_interval_ms,
                                 unit=adaptive.BYTES)
    return adaptive.Settings(queue=spec.adaptive_queue, interval_ms=spec.adaptive_interval_ms)


class _Keeper:
    """One adopted group: reconciled when its signs change (watch.py)."""

    def __init__(self, spec, layout: Layout):
        self.spec = spec
        self.layout = layout
        self.key: sockets.EndpointKey = spec.listen
        self.settled: Optional[watch.Signs] = None
        self.pids: frozenset[int] = frozenset()
        self.next_full = 0.0
        self.failed: Optional[str] = None   # the last reconcile's error, logged once
        self.notes: set[str] = set()        # notes (unmanaged listeners, unknown names) logged already
        self.soon = 0.0                     # the delay before looking again at an undecided listener
        self.adaptive: _Adaptive | None = None

    def adapt(self, now: float) -> float | None:
        """Run the adaptive loop when the spec asks for it; when the next sample is due (None: off)."""
        if not self.spec.adaptive:
            if self.adaptive is not None:
                self.adaptive.close()
                self.adaptive = None
            return None
        if self.adaptive is None:
            self.adaptive = _Adaptive(self.name, self.layout)
        return self.adaptive.step(now, _settings(self.spec))

    @property
    def name(self) -> str:
        return self.spec.name

    def tick(self, now: float, force: bool = False) -> bool:
        """Look at the group; reconcile it when it changed.  True when it was reconciled."""
        signs = watch.signs(self.key, self.pids)
        why = watch.difference(self.settled, signs)
        if why is None and not force and now < self.next_full:
            return False
        self.reconcile(signs, why or ("file reread" if force else "periodic check"))
        return True

    def reconcile(self, signs: watch.Signs, why: str) -> None:
        try:
            plan = reconcile.reconcile(self.spec, self.layout)
        except RpctlError as e:
            text = str(e)
            if text != self.failed:
                log.warning("group %s: cannot reconcile (%s): %s", self.name, why, e)
            self.failed = text
            self.settled = signs
            self.next_full = time.monotonic() + RETRY
            return
        if self.failed is not None:
            log.info("group %s: reconciled again", self.name)
            self.failed = None
        for line in plan.change_lines():
            log.info("%s", line)
        # A listener whose serving process cannot be told apart yet is what a
        # reload looks like half-way (nginx's master opened it, no worker polls
        # it yet): nothing else may change when the worker starts polling, so
        # it is looked at again soon, less and less often, and only named in
        # the log when it stays so.
        undecided = any(not u.pid for u in plan.unmanaged)
        self.soon = (min(self.soon * 2, RESYNC) if self.soon else SOON) if undecided else 0.0
        if self.soon and self.soon < UNDECIDED_NOTE:
            plan = replace(plan, unmanaged=tuple(u for u in plan.unmanaged if u.pid))
        self._log_notes(plan.note_lines())
        # What this reconcile left: the listeners seen before it, the
        # members' pids after it (a pid dead already stays out of both).
        if self.adaptive is not None:
            self.adaptive.stale()
        self.pids = frozenset(plan.pids.values())
        self.settled = watch.Signs(signs.listeners, watch.live_pids(self.pids))
        self.next_full = time.monotonic() + (self.soon or RESYNC)

    def _log_notes(self, notes: list[str]) -> None:
        """Each note (a listener not admitted, a name no member has) once while it holds."""
        for line in notes:
            if line not in self.notes:
                log.warning("%s", line)
        self.notes = set(notes)

    def close(self) -> None:
        if self.adaptive is not None:
            self.adaptive.close()
            self.adaptive = None


class _LaunchedKeeper(_Keeper):
    """A `run` group: a Launcher starts, restarts and registers its children
    (reconcile leaves such groups to serve); the file's weights, drains and
    pin are applied to them by name when the file is (re)read."""

    def __init__(self, spec, layout: Layout):
        super().__init__(spec, layout)
        self.check_options()
        run = spec.run
        self.launcher = Launcher(
            spec.name,
            run.count,
            list(run.command),
            name_format=spec.names,
            listen=_hostport(self.key),
            proto=self.key.proto,
            backoff_initial=run.backoff_initial,
            backoff_max=run.backoff_max,
            options=spec.options,
        )
        self.launcher.open()
        try:
            self.launcher.start()
        except BaseException:
            self.launcher.close()
            raise

    def check_options(self) -> None:
        """StateError when the group exists and the file's creation options are not its own."""
        if os.path.isdir(self.layout.group_dir(self.name)):
            with groups.Group.open(self.name, self.layout) as g:
                reconcile.check_options(self.spec, g.options())

    def tick(self, now: float, force: bool = False) -> bool:
        if not force:
            return False
        try:
            self.check_options()
        except RpctlError as e:
            log.warning("%s", e)  # the launcher goes on with the options the group has
        try:
            for line in _apply_policies(self.spec, self.layout, self.launcher):
                log.info("group %s: %s", self.name, line)
        except RpctlError as e:
            log.warning("group %s: nothing applied of its weights, drains and pin: %s", self.name, e)
        return True

    def close(self) -> None:
        super().close()
        self.launcher.close()


def _apply_policies(spec, layout: Layout, launcher: Launcher) -> list[str]:
    """The file's weights, drains and pin on a run group's members, in one
    publish; a member whose child is dead stays drained (the launcher drained
    it and undrains it when the replacement runs).  Returns one line per change."""
    from .pin import plan_pins

    dead = {m.name for m in launcher.members if not m.pid}
    retiring = {m.name for m in launcher.members if m.retiring}  # drained by Launcher.resize until stopped
    with layout.group_lock(spec.name), groups.Group.open(spec.name, layout) as g:
        view = views.read_group(g, with_queues=False)
        members = g.members()
        policies = g.live_policies(members)
        changes = []
        for idx, pol in policies.items():
            name = members[idx].name.decode(errors="replace")
            weight = spec.weights.get(name, spec.default_weight)
            draining = (name in spec.drain or name in retiring
                        or (name in dead and bool(pol.flags & abi.RP_POLICY_DRAINING)))
            if weight != pol.weight:
                changes.append(f"{name} weight {pol.weight} -> {weight}")
                pol.weight = weight
            if draining != bool(pol.flags & abi.RP_POLICY_DRAINING):
                changes.append(f"{'drain' if draining else 'undrain'} {name}")
                pol.flags ^= abi.RP_POLICY_DRAINING
        live_pin = config.PinSpec(view.mode, view.pin_dev if view.mode == "rss" else "")
        pin = None
        if spec.pin != live_pin or (changes and spec.pin.mode != "weighted"):
            pids = {m.name: m.pid for m in view.members if not m.gone and m.pid}
            changes.append(f"pin {spec.pin.text}" + (f" (was {live_pin.text})" if spec.pin != live_pin else ""))

            def pin(index: dict[str, int]):
                return plan_pins(spec.pin.mode, spec.pin.dev, index, {n: pids[n] for n in index if n in pids},
                                 spec.listen)

        if changes:
            groups.update_members(g, members, policies=policies, pin=pin)
    return changes


def _hostport(key: sockets.EndpointKey) -> str:
    return f"[{key.addr}]:{key.port}" if ":" in key.addr else f"{key.addr}:{key.port}"


def _made_from(spec) -> tuple:
    """What a keeper is made from: a change of it (the endpoint; a run group's
    command, names or backoff) means a new keeper, and a new launcher.  A run
    group's count is not in it: the launcher grows or shrinks in place."""
    run = spec.run
    return (spec.listen, None if run is None else (tuple(run.command), spec.names,
                                                   run.backoff_initial, run.backoff_max))


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
        self.keepers: dict[str, _Keeper] = {}
        self.config = None
        self._requests = _Requests()
        self._wake: Optional[sockets.SelfPipe] = None
        self._sel: Optional[selectors.BaseSelector] = None
        self._next_cleanup = 0.0
        self._next_look = 0.0
        self._adapt_due: float | None = None
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
                if isinstance(k, _LaunchedKeeper):
                    k.launcher.stop()
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
        for k in self.keepers.values():
            if isinstance(k, _LaunchedKeeper):
                d = k.launcher.next_due()
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
        look = force or now >= self._next_look
        if look:
            self._next_look = now + self.interval
        for k in list(self.keepers.values()):
            if isinstance(k, _LaunchedKeeper):
                k.launcher.step(0)
            if look:
                try:
                    k.tick(now, force)
                except (RpctlError, OSError) as e:
                    log.warning("group %s: cannot look at it: %s", k.name, e)
        self._adapt(time.monotonic())

    def _adapt(self, now: float) -> None:
        dues = [d for d in (k.adapt(now) for k in list(self.keepers.values())) if d is not None]
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
            if old is not None and _made_from(old.spec) != _made_from(spec):
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
                if isinstance(old, _LaunchedKeeper) and old.spec.run.count != spec.run.count:
                    self._resize(old, spec.run.count)
                old.spec = spec
        self.config = cfg
        self._tick(force=True)

    def _resize(self, k: _LaunchedKeeper, count: int) -> None:
        """A run group's new count: its launcher grows or shrinks in place."""
        log.info("group %s: count %d -> %d", k.name, k.spec.run.count, count)
        try:
            for line in k.launcher.resize(count):
                log.info("group %s: %s", k.name, line)
        except (RpctlError, OSError) as e:
            log.warning("group %s: count %d not reached: %s", k.name, count, e)

    def _keeper(self, spec) -> _Keeper:
        if spec.run is None:
            return _Keeper(spec, self.layout)
        k = _LaunchedKeeper(spec, self.layout)
        self._sel.register(k.launcher.fileno(), selectors.EVENT_READ, k)
        return k

    def _drop(self, name: str) -> None:
        k = self.keepers.pop(name)
        if isinstance(k, _LaunchedKeeper):
            self._sel.unregister(k.launcher.fileno())
        try:
            k.close()
        except RpctlError as e:
            log.warning("group %s: %s", name, e)

    def _close_all(self) -> None:
        for name in list(self.keepers):
            self._drop(name)


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"

