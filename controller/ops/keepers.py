"""The keepers of `rpctl serve`: one per group of the file, each keeping its group true to it.

An adopted group (`adopt = {...}`) has a Keeper: several times a second its
endpoint's listeners and its members' pids, read from serve's one look at
the namespace (controller/ops/watch.py); only when either differs from what
the last reconcile left the group is reconciled (controller/ops/reconcile.py:
one lock, one atomic publish).  At least every RESYNC seconds, at the same
moment for every group, the plan a reconcile would make is worked out from
that look's one discover() and the group's maps, and the group is
reconciled only when it would change something or say something new.

A group with `run = {...}` has a LaunchedKeeper: a Launcher starts,
supervises and registers its children, as `rpctl run` does; the file's
weights, drains and pin are applied when the file is read.

Serve treats every keeper alike: what only a launched group does (children
to supervise, an fd to wait on, a restart to wake up for, a count to grow
or shrink to, children to kill at a second stop) is a method that an
adopted group's keeper leaves empty.  A keeper of a group with `adaptive =
true` also runs its AdaptiveLoop (controller/ops/adaptive_loop.py).  So
that a wake-up costs nothing per group that has nothing to do then, serve
asks each keeper once, when the file is read, whether it has children
(has_children) and whether it samples (samples), and calls only those.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import replace
from typing import Optional

from ..contract.errors import RpctlError
from ..kernel import sockets
from ..read import views
from ..store.generation import Group
from ..store.membership import update_members
from ..store.policy import draining_flag, new_policy
from ..store.state import Layout
from . import reconcile, watch
from .adaptive_loop import AdaptiveLoop, settings_of
from .config_spec import GroupSpec, PinSpec
from .launcher import Launcher

__all__ = ["RESYNC", "Keeper", "LaunchedKeeper", "keeper_for", "next_check", "undecided"]

RESYNC = 30.0    # a group that looks unchanged is checked at least this often (what a reconcile would do)
RETRY = 2.0      # after a reconcile failed, the next full one comes this soon
SOON = 0.2       # a listener no process serves yet (mid-reload): looked at again this soon, then 2x, 4x...
UNDECIDED_NOTE = 1.6  # ...and logged as not admitted once it stayed so this long
DRAIN_LOOK = 0.5  # a draining server generation is looked at this often (a read of the group's view)
GLANCE = 1.0      # a group with generations: how often serve checks whether another command published

log = logging.getLogger("rpctl.serve")  # serve's log: keepers run inside serve


def next_check(now: float) -> float:
    """When the periodic check after `now` is due: the next multiple of RESYNC
    on the monotonic clock, the same moment for every group (one look at /proc
    serves them all), never more than RESYNC away."""
    return (math.floor(now / RESYNC) + 1) * RESYNC


def undecided(plan: reconcile.Plan) -> bool:
    """Whether a plan leaves a listener whose serving process is not told apart yet (pid 0), or
    a shared member only its parent holds: what the keeper looks at again soon."""
    return any(not u.pid for u in plan.unmanaged) or bool(plan.unserved)


def keeper_for(spec: GroupSpec, layout: Layout) -> Keeper:
    """The keeper of a group of the file: launched for `run`, adopted otherwise."""
    return Keeper(spec, layout) if spec.run is None else LaunchedKeeper(spec, layout)


class Keeper:
    """One adopted group: reconciled when its signs change (watch.py)."""

    def __init__(self, spec: GroupSpec, layout: Layout):
        self.spec = spec
        self.layout = layout
        self.key: sockets.EndpointKey = spec.listen
        self.settled: Optional[watch.Signs] = None
        self.pids: frozenset[int] = frozenset()
        self.next_full = 0.0
        self.failed: Optional[str] = None   # the last reconcile's error, logged once
        self.pin_refused = ""               # why the file's pin is not applied, logged once
        self.notes: set[str] = set()        # notes (unmanaged listeners, unknown names) logged already
        self.soon = 0.0                     # the delay before looking again at an undecided listener
        self.adaptive: AdaptiveLoop | None = None
        self.draining = False               # a server generation may be draining: looked at until drained
        self.next_drain_look = 0.0
        self.next_glance = 0.0
        self.published: Optional[int] = None  # when the live table was published, at the last glance
        self.drained: set[int] = set()      # generations told drained (once each)

    @property
    def name(self) -> str:
        return self.spec.name

    # The file ---------------------------------------------------------------------

    def can_take(self, spec: GroupSpec) -> bool:
        """Whether this keeper can keep `spec` in place (a reread file); when not, a new one does."""
        return _made_from(self.spec) == _made_from(spec)

    def take(self, spec: GroupSpec) -> None:
        """Keep `spec` from now on (can_take(spec) holds)."""
        self.spec = spec

    # Looks ---------------------------------------------------------------------------

    def samples(self) -> bool:
        """Whether adapt() has anything to do: the spec asks for adaptive steering, or its loop is to be ended."""
        return self.spec.adaptive or self.adaptive is not None

    def adapt(self, now: float, look: watch.Look) -> float | None:
        """Run the adaptive loop when the spec asks for it; when the next sample is due (None: off)."""
        if not self.spec.adaptive:
            if self.adaptive is not None:
                self.adaptive.close()
                self.adaptive = None
            return None
        if self.adaptive is None:
            self.adaptive = AdaptiveLoop(self.name, self.layout, self.key)
        return self.adaptive.step(now, settings_of(self.spec), look)

    def tick(self, now: float, look: watch.Look, force: bool = False) -> bool:
        """Look at the group; reconcile it when it changed.  True when it was reconciled."""
        signs = look.signs(self.key, self.pids)
        why = watch.difference(self.settled, signs)
        if why is None and not force:
            if now < self.next_full:
                self.watch_generations(now)
                return False
            if self.unchanged(look):
                self.next_full = next_check(now)
                self.watch_generations(now)
                return False
        self.reconcile(signs, why or ("file reread" if force else "periodic check"))
        self.watch_generations(now)
        return True

    def waits(self) -> watch.Wait:
        """What would make tick() do anything: serve asks no keeper while a look finds all of it unchanged."""
        if self.settled is None:
            return watch.Wait(self.key, frozenset(), -math.inf)
        until = self.next_full
        if self.spec.rollout is not None:  # watch_generations: a draining generation, or a glance
            until = min(until, self.next_drain_look if self.draining else self.next_glance)
        return watch.Wait(self.key, self.settled.live_pids, until)

    def unchanged(self, look: watch.Look) -> bool:
        """The periodic check: whether a reconcile now would change nothing and log
        nothing new, worked out (without the group's lock) from the look's one
        discover() and the group's maps.  A group waiting for a retry, or for an
        undecided listener, is reconciled in full instead."""
        if self.soon or self.failed is not None:
            return False
        try:
            listeners = reconcile.candidates(look.served(self.key), look.identity,
                                               reconcile.keyed_by(self.spec))
            if not listeners and not os.path.isdir(self.layout.group_dir(self.name)):
                # Nothing to adopt and no group: what observe() would find, without reading every
                # group of the namespace to ask which steers the endpoint (one that did would have
                # failed the last reconcile, and a failed group is reconciled in full).
                observed = reconcile.Observed(self.name, self.key)
            else:
                observed = reconcile.observe(self.spec, self.layout, listeners)
            plan = reconcile.plan(self.spec, observed)
        except (RpctlError, OSError):
            return False  # the reconcile says what
        return plan.empty and not undecided(plan) and set(plan.note_lines()) == self.notes

    def watch_generations(self, now: float) -> None:
        """While a server generation drains, look at it every DRAIN_LOOK (its members'
        queues and, UDP, live flows: the flow table walked); say once when it is drained."""
        if self.spec.rollout is None:
            return
        if not self.draining:
            # rpctl promote and rpctl rollback publish without serve: a glance at when
            # the group's live table was published tells serve to look again.
            if now < self.next_glance:
                return
            self.next_glance = now + GLANCE
            published = _published(self.name, self.layout)
            if published == self.published:
                return
            self.published, self.draining, self.next_drain_look = published, True, 0.0
        if now < self.next_drain_look:
            return
        self.next_drain_look = now + DRAIN_LOOK
        gens = views.read_view(self.name, self.layout, with_queues=None).generations
        drained = {g.number for g in gens if g.state == "drained"}
        for number in sorted(drained - self.drained):
            log.info("generation %d of %s drained: safe to stop", number, self.name)
        self.drained = drained
        self.draining = any(g.state == "draining" for g in gens)

    def reconcile(self, signs: watch.Signs, why: str) -> None:
        try:
            plan = reconcile.reconcile(self.spec, self.layout, pin_or_keep=True)
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
        if plan.pin_refused and plan.pin_refused != self.pin_refused:
            log.warning("group %s: pin %s", self.name, plan.pin_refused)
        self.pin_refused = plan.pin_refused
        # A listener whose serving process cannot be told apart yet is what a
        # reload looks like half-way (nginx's master opened it, no worker polls
        # it yet): nothing else may change when the worker starts polling, so
        # it is looked at again soon, less and less often, and only named in
        # the log when it stays so.
        # So is a shared listener that only its prefork server's parent holds (the old children
        # gone, the new ones not yet polling): no pid exits when they start.
        self.soon = (min(self.soon * 2, RESYNC) if self.soon else SOON) if undecided(plan) else 0.0
        if self.soon and self.soon < UNDECIDED_NOTE:
            plan = replace(plan, unmanaged=tuple(u for u in plan.unmanaged if u.pid))
        self._log_notes(plan.note_lines())
        # What this reconcile left: the listeners seen before it, the
        # members' pids after it (a pid dead already stays out of both).
        if self.adaptive is not None:
            self.adaptive.stale()
        self.pids = frozenset(plan.pids.values())
        self.draining, self.next_drain_look = True, 0.0  # looked at now: the plan may have drained a generation
        self.settled = watch.Signs(signs.listeners, watch.live_pids(self.pids))
        self.next_full = time.monotonic() + self.soon if self.soon else next_check(time.monotonic())

    def _log_notes(self, notes: list[str]) -> None:
        """Each note (a listener not admitted, a name no member has) once while it holds."""
        for line in notes:
            if line not in self.notes:
                log.warning("%s", line)
        self.notes = set(notes)

    # Children: an adopted group has none (serve keeps no process of its own there) --------

    def has_children(self) -> bool:
        """Whether fds(), next_due() and supervise() have anything to do (a launched group's children)."""
        return False

    def fds(self) -> tuple[int, ...]:
        """The fds serve waits on for this group: readable when its children need a supervise()."""
        return ()

    def next_due(self) -> Optional[float]:
        """Seconds until this group's children need a supervise() (a restart); None when nothing is due."""
        return None

    def supervise(self) -> None:
        """Handle the children that exited and restart those whose time came."""

    def stop_now(self) -> None:
        """Serve was asked to stop a second time: children are killed at once, not waited for."""

    def close(self) -> None:
        """Serve lets go of the group: its adaptive loop ends (a launched group's children stop)."""
        if self.adaptive is not None:
            self.adaptive.close()
            self.adaptive = None


class LaunchedKeeper(Keeper):
    """A `run` group: a Launcher starts, restarts and registers its children
    (reconcile leaves such groups to serve); the file's weights, drains and
    pin are applied to them by name when the file is (re)read."""

    def __init__(self, spec: GroupSpec, layout: Layout):
        super().__init__(spec, layout)
        self.check_options()
        run = spec.run
        self.launcher = Launcher(
            spec.name,
            run.count,
            list(run.command),
            name_format=spec.names,
            listen=sockets.hostport_text(self.key.addr, self.key.port),
            proto=self.key.proto,
            backoff_initial=run.backoff_initial,
            backoff_max=run.backoff_max,
            options=spec.options,
            outlive=True,  # an OOM kill of serve must not take the servers down (decision 0025)
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
            with Group.open(self.name, self.layout) as g:
                reconcile.check_options(self.spec, g.options())

    def take(self, spec: GroupSpec) -> None:
        """A new count grows or shrinks the launcher in place."""
        if spec.run.count != self.spec.run.count:
            self._resize(spec.run.count)
        super().take(spec)

    def _resize(self, count: int) -> None:
        log.info("group %s: count %d -> %d", self.name, self.spec.run.count, count)
        try:
            for line in self.launcher.resize(count):
                log.info("group %s: %s", self.name, line)
        except (RpctlError, OSError) as e:
            log.warning("group %s: count %d not reached: %s", self.name, count, e)

    def tick(self, now: float, look: watch.Look, force: bool = False) -> bool:
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

    def waits(self) -> watch.Wait:
        return watch.Wait(None, frozenset(), math.inf)  # only a reread of the file makes tick() do anything

    def has_children(self) -> bool:
        return True

    def fds(self) -> tuple[int, ...]:
        return (self.launcher.fileno(),)

    def next_due(self) -> Optional[float]:
        return self.launcher.next_due()

    def supervise(self) -> None:
        self.launcher.step(0)

    def stop_now(self) -> None:
        self.launcher.stop()

    def close(self) -> None:
        super().close()
        self.launcher.close()


def _published(name: str, layout: Layout) -> Optional[int]:
    """When the group's live table was published (CLOCK_REALTIME ns: every publish
    writes it); None when it cannot be read."""
    from ..contract import abi

    try:
        with Group.open(name, layout) as g:
            live = g.maps["gens"].get(g.ctl().gen & 1, abi.RpGen)
            return None if live is None else live.published_ns
    except (RpctlError, OSError):
        return None


def _apply_policies(spec: GroupSpec, layout: Layout, launcher: Launcher) -> list[str]:
    """The file's weights, drains and pin on a run group's members, in one
    publish; a member whose child is dead stays drained (the launcher drained
    it and undrains it when the replacement runs).  Returns one line per change."""
    from .pin import plan_pins

    dead = {m.name for m in launcher.members if not m.pid}
    retiring = {m.name for m in launcher.members if m.retiring}  # drained by Launcher.resize until stopped
    with layout.group_lock(spec.name), Group.open(spec.name, layout) as g:
        view = views.read_group(g, with_queues=False)
        members = g.members()
        policies = g.live_policies(members)
        changes = []
        for idx, pol in policies.items():
            name = members[idx].name.decode(errors="replace")
            weight = spec.weights.get(name, spec.default_weight)
            was_draining = draining_flag(pol)
            draining = name in spec.drain or name in retiring or (name in dead and was_draining)
            if weight != pol.weight:
                changes.append(f"{name} weight {pol.weight} -> {weight}")
            if draining != was_draining:
                changes.append(f"{'drain' if draining else 'undrain'} {name}")
            policies[idx] = new_policy(weight, draining)
        live_pin = PinSpec(view.mode, view.pin_dev if view.mode == "rss" else "")
        pin = None
        if spec.pin != live_pin or (changes and spec.pin.mode != "weighted"):
            pids = {m.name: m.pid for m in view.members if not m.gone and m.pid}
            changes.append(f"pin {spec.pin.text}" + (f" (was {live_pin.text})" if spec.pin != live_pin else ""))

            def pin(index: dict[str, int]):
                return plan_pins(spec.pin.mode, spec.pin.dev, index, {n: pids[n] for n in index if n in pids},
                                 spec.listen)

        if changes:
            update_members(g, members, policies=policies, pin=pin)
    return changes


def _made_from(spec: GroupSpec) -> tuple:
    """What a keeper is made from: a change of it (the endpoint; a run group's
    command, names or backoff) means a new keeper, and a new launcher.  A run
    group's count is not in it: the launcher grows or shrinks in place."""
    run = spec.run
    return (spec.listen, None if run is None else (tuple(run.command), spec.names,
                                                   run.backoff_initial, run.backoff_max))
