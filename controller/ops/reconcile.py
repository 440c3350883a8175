"""Make one group of the kernel what its GroupSpec (controller/ops/config.py) says.

    observe(spec, layout) -> Observed   the endpoint's listeners, who serves them, the group's members
    plan(spec, observed) -> Plan        what to add, remove, refresh, weigh, drain and pin (pure)
    execute(plan, layout)               all of it in ONE Group.publish (one ctl.gen flip)
    reconcile(spec, layout, dry_run)    the three under the group's lock

Members are known by socket cookie.  A listener of the endpoint whose
serving process matches the spec's adopt rule and that is not a member
joins under a stable name (controller/tables/naming.py); a member whose socket
closed, or whose process no longer matches, leaves; a member whose socket
lives on in another process (nginx's workers after a reload) keeps its
name, index and policy and only its pid and fd on record change.  Weights
and drains apply by name; a name that no member has is not an error (its
listener may come later), the plan only says so.  A second reconcile with
nothing changed plans nothing and publishes nothing.

`rpctl apply` calls reconcile() once per group; `rpctl serve` calls it
whenever the endpoint changes.  Groups with `run` are launched and kept by
`rpctl serve`: reconcile leaves them alone.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Callable, Iterator, Optional

from ..contract import abi
from ..contract.errors import InvalidInput, RpctlError, StateError
from ..contract.refs import Call
from ..kernel import probe, sockets
from ..kernel.discover import Endpoint, Identity, discover, identity
from ..kernel.server_root import generation_key
from ..store.generation import Group, ctl_endpoint, name_of
from ..store.lifecycle import opened_or_created
from ..store.lookup import find_group_for
from ..store.membership import NO_MARK, Joining, Mark, Moved, NewMember, mark_of, taken, update_members
from ..store.options import NONE_GIVEN, GroupOptions, value_text
from ..store.policy import draining_flag, new_policy
from ..store.state import Layout
from ..tables import pin_table, quic
from ..tables.naming import Newcomer, assign_names
from ..tables.server_generations import Verdict
from .config import WEIGHTED, GroupSpec, PinSpec
from .rollout import Seatholder, steer

if TYPE_CHECKING:
    from .watch import Look

__all__ = ["Add", "Candidate", "Current", "Observed", "Plan", "Refresh", "Remark", "Remove", "Reweigh", "Unmanaged",
           "candidates", "execute", "keyed_by", "observe", "plan", "reconcile"]

SOCKET_CLOSED = "socket closed"


@dataclass(frozen=True)
class Candidate:
    """A listener of the endpoint and the process that serves it (pid 0: none told apart)."""

    cookie: int
    inode: int
    pid: int = 0
    fd: int = -1
    comm: str = ""
    exe: Optional[str] = None
    uid: Optional[int] = None
    cgroup: Optional[str] = None
    holders: tuple[int, ...] = ()  # pids holding it
    servers: tuple[int, ...] = ()  # pids seen serving it (several: a prefork server's children share it)
    weak: bool = False  # pid only holds it, alone, and is not seen serving it (discover.Listener.weak)

    @property
    def shared(self) -> bool:
        return len(self.servers) > 1
    generation_key: Optional[str] = None  # its server's (kernel/server_root.py), for a group with generations


@dataclass(frozen=True)
class Current:
    """A member of the group as its live generation has it."""

    index: int
    name: str
    cookie: int
    pid: int
    fd: int
    weight: int
    draining: bool
    open: bool  # its socket is still in the socket array
    shared: bool = False  # recorded as served by several processes (RP_MEMBER_SHARED)
    mark: Mark = NO_MARK  # what its entry keeps of its server generation


@dataclass(frozen=True)
class Observed:
    group: str
    key: sockets.EndpointKey
    exists: bool = False
    listeners: tuple[Candidate, ...] = ()
    members: tuple[Current, ...] = ()
    pin: PinSpec = WEIGHTED
    options: GroupOptions = NONE_GIVEN  # those the group was made with (when it exists)


@dataclass(frozen=True)
class Add:
    name: str
    cookie: int
    pid: int
    fd: int
    comm: str
    weight: int
    draining: bool
    shared: bool = False
    mark: Mark = NO_MARK
    quic_server_id: Optional[str] = None  # hex: the id asked for it (quic_server_ids = "cookie")


@dataclass(frozen=True)
class Remark:
    """A member whose server generation, or the verdict on it, or its canary flag changes."""

    name: str
    index: int
    mark: Mark


@dataclass(frozen=True)
class Remove:
    name: str
    index: int
    reason: str


@dataclass(frozen=True)
class Refresh:
    """A member whose socket lives on in another process: only its pid and fd change."""

    name: str
    index: int
    pid: int
    fd: int
    old_pid: int
    shared: bool = False  # several processes serve it: pid is the first


@dataclass(frozen=True)
class Reweigh:
    """A member whose weight or drain flag changes."""

    name: str
    index: int
    weight: int
    draining: bool
    old_weight: int
    old_draining: bool


@dataclass(frozen=True)
class Unmanaged:
    """A listener of the endpoint that is not admitted, and why."""

    cookie: int
    inode: int
    pid: int
    comm: str
    reason: str


@dataclass(frozen=True)
class Plan:
    group: str
    key: sockets.EndpointKey
    create: bool = False
    options: GroupOptions = NONE_GIVEN  # the creation options of the group, when the plan creates it
    adds: tuple[Add, ...] = ()
    removes: tuple[Remove, ...] = ()
    refreshes: tuple[Refresh, ...] = ()
    reweighs: tuple[Reweigh, ...] = ()
    pin: Optional[PinSpec] = None  # the pin mode to publish (again); None: the live one stays
    pin_was: PinSpec = WEIGHTED
    unmanaged: tuple[Unmanaged, ...] = ()
    unknown_names: tuple[str, ...] = ()  # in weights or drain, no member's name
    marks: tuple[Remark, ...] = ()
    generation_lines: tuple[str, ...] = ()  # what generations do now, when that changed
    kept_by_serve: bool = False  # a `run` group: rpctl serve launches its members
    # Members whose socket one process holds and none is seen serving (a prefork server's
    # parent between two generations of children): their record stays, serve looks again soon.
    unserved: tuple[str, ...] = ()
    pids: dict[str, int] = field(default_factory=dict, compare=False)  # name -> pid of the members after it
    pin_refused: str = ""  # why the members after it cannot take the file's pin (without_refused_pin)

    @property
    def empty(self) -> bool:
        return not (self.create or self.adds or self.removes or self.refreshes or self.reweighs or self.pin
                    or self.marks)

    def change_lines(self) -> list[str]:
        g = f"group {self.group}:"
        given = ", ".join(f"{k} {value_text(v)}" for k, v in self.options.given().items())
        made = f"{g} create it for {self.key.text}" + (f" with {given}" if given else "")
        out = [made] if self.create else []
        out += [f"{g} - {r.name} ({r.reason})" for r in self.removes]
        for a in self.adds:
            drained = ", drained" if a.draining else ""
            out.append(f"{g} + {a.name} (pid {a.pid} {a.comm} fd {a.fd}, weight {a.weight}{drained})")
        for r in self.refreshes:
            shared = ", shared with other processes" if r.shared else ""
            out.append(f"{g} {r.name} pid {r.old_pid} -> {r.pid} (same socket, fd {r.fd}{shared})")
        for r in self.reweighs:
            if r.weight != r.old_weight:
                out.append(f"{g} {r.name} weight {r.old_weight} -> {r.weight}")
            if r.draining != r.old_draining:
                out.append(f"{g} {'drain' if r.draining else 'undrain'} {r.name}")
        if self.pin is not None:
            was = self.pin_was.text
            out.append(f"{g} pin {self.pin.text}" + (f" (was {was})" if was != self.pin.text else " (members changed)"))
        if self.marks and not self.generation_lines:  # nothing changed role: numbers recorded, or cleared
            for r in self.marks:
                out.append(f"{g} {r.name} generation {r.mark.server_gen or 'none'}")
        return out + list(self.generation_lines)

    def note_lines(self) -> list[str]:
        g = f"group {self.group}:"
        if self.kept_by_serve:
            return [f"{g} kept by rpctl serve (its members are launched by `run`)"]
        out = [f"{g} not admitted: socket {u.cookie} of pid {u.pid} {u.comm} ({u.reason})" for u in self.unmanaged]
        if self.unknown_names:
            out.append(f"{g} no member named {', '.join(self.unknown_names)} yet (weights and drain apply when one is)")
        return out

    def lines(self) -> list[str]:
        """What the plan does, one human line each ("group web: up to date" when nothing), then notes."""
        changes = self.change_lines()
        if not changes and not self.kept_by_serve:
            changes = [f"group {self.group}: up to date" + ("" if self.pids or self.create else " (no member yet)")]
        return changes + self.note_lines()


# observe ----------------------------------------------------------------------


def keyed_by(spec: GroupSpec) -> Optional[str]:
    """What tells the group's server generations apart (kernel/server_root.py); None: it has none."""
    return spec.generation_by if spec.rollout is not None else None


def candidates(endpoint: Optional[Endpoint], identify: Callable[[int], Identity] = identity,
               generation_by: Optional[str] = None) -> tuple[Candidate, ...]:
    """The listeners of a discovered endpoint (None: it has none) and the process serving each,
    with what an adopt rule matches of it (`identify`: discover.identity, or a cache of it) and,
    with `generation_by` (keyed_by()), the key of its server generation."""
    out = []
    holding = {pid for lst in endpoint.listeners for pid in lst.holder_pids} if endpoint is not None else set()
    for lst in endpoint.listeners if endpoint is not None else []:
        holders = tuple(lst.holder_pids)
        s = lst.server
        if s is None:
            out.append(Candidate(lst.cookie, lst.inode, holders=holders))
            continue
        who = identify(s.pid)
        servers = tuple(h.pid for h in lst.servers)
        gen_key = generation_key(s.pid, holding, generation_by, who.cgroup) if generation_by else None
        out.append(Candidate(lst.cookie, lst.inode, s.pid, s.fd, s.comm, who.exe, who.uid, who.cgroup, holders,
                             servers, lst.weak, gen_key))
    return tuple(out)


def _candidates(spec: GroupSpec) -> tuple[Candidate, ...]:
    key = spec.listen
    eps = [e for e in discover(key.port, key.proto, probe_reuseport=False) if e.key == key]
    return candidates(eps[0] if eps else None, generation_by=keyed_by(spec))


def _not_steered_by_another(spec: GroupSpec, layout: Layout) -> None:
    steering = find_group_for(spec.listen, layout)
    if steering is not None and steering != spec.name:
        raise InvalidInput(f"group {spec.name}: {spec.listen.text} is steered by group {steering!r} already (",
                           Call("unload", group=steering), ", or give the group that name in the file)")


def observe(spec: GroupSpec, layout: Optional[Layout] = None,
            listeners: Optional[tuple[Candidate, ...]] = None) -> Observed:
    """The endpoint's listeners (`listeners` when the caller discovered them
    already) and the group's members, as they are now."""
    layout = layout or Layout()
    if not os.path.isdir(layout.group_dir(spec.name)):
        _not_steered_by_another(spec, layout)
        return Observed(spec.name, spec.listen, False, _candidates(spec) if listeners is None else listeners)
    with Group.open(spec.name, layout) as g:
        ctl = g.ctl()
        if ctl_endpoint(ctl) != spec.listen:
            _not_steered_by_another(spec, layout)
            raise InvalidInput(f"group {spec.name}: it steers {ctl_endpoint(ctl).text}, not {spec.listen.text} (",
                               Call("unload", group=spec.name), " first to move it)")
        # The group steers the endpoint, so no other does (a group is made only for an
        # endpoint no group steers): no need to read every group of the namespace to ask.
        if listeners is None:
            listeners = _candidates(spec)
        members, pin = _members(g, ctl)
    return Observed(spec.name, spec.listen, True, listeners, members, pin, GroupOptions.of_ctl(ctl))


def _members(g: Group, ctl: abi.RpCtl) -> tuple[tuple[Current, ...], PinSpec]:
    """The members of the live generation and its pin mode: what a plan needs of the
    maps, and no more (no counters: serve's periodic check reads every group)."""
    gen = ctl.gen & 1
    live = g.maps["gens"].get(gen, abi.RpGen)
    members = g.members()
    current = tuple(Current(i, name_of(m), m.cookie, m.pid, m.fd, pol.weight, draining_flag(pol), g.socket_open(i, m),
                            bool(m.flags & abi.RP_MEMBER_SHARED), mark_of(m))
                    for i, pol in g.live_policies(members, gen).items() for m in (members[i],))
    if live is None:
        return current, WEIGHTED
    return current, PinSpec(pin_table.mode_name(live.mode), live.pin_dev.decode(errors="replace"))


# plan ---------------------------------------------------------------------------


def _mismatch(spec: GroupSpec, c: Candidate) -> str:
    """Why candidate `c` may not be a member ("" when it may)."""
    if not c.pid:
        return f"cannot tell which of pids {','.join(map(str, c.holders)) or '(none)'} serves it"
    if spec.adopt is None:
        return "the group has no adopt rule"
    return spec.adopt.mismatch(c.comm, c.exe, c.uid, c.cgroup)


def _moved(m: Current, c: Candidate) -> bool:
    """Whether member m's record (pid, fd, shared) no longer says who serves its socket
    (c): a recorded process that still serves it stays the one on record."""
    if c.shared:
        return m.pid not in c.servers or not m.shared
    return (c.pid, c.fd) != (m.pid, m.fd) or m.shared


def check_options(spec: GroupSpec, own: GroupOptions) -> None:
    """Refuse a file whose creation options differ from those the group was made with:
    they are fixed at creation, so the group is left as it is."""
    for name, value, mine in spec.options.differences(own)[:1]:
        raise StateError(
            f"group {spec.name}: {name} is {value_text(mine)} in the kernel and {value_text(value)} in the file; "
            "a group's creation options are fixed (", Call("unload", group=spec.name),
            " first, then apply again to make it anew), the group is left as it is",
        )


def plan(spec: GroupSpec, observed: Observed, verdict: Optional[Verdict] = None) -> Plan:
    """What makes the group match `spec` (and, with `verdict`, gives its newest
    generation that verdict: rpctl promote, rpctl rollback).  Pure."""
    base = {"group": spec.name, "key": spec.listen, "pin_was": observed.pin}
    if spec.run is not None:
        return Plan(**base, kept_by_serve=True)
    if observed.exists:
        check_options(spec, observed.options)
    listeners = {c.cookie: c for c in observed.listeners}

    removes: list[Remove] = []
    refreshes: list[Refresh] = []
    staying: list[Current] = []
    for m in observed.members:
        c = listeners.get(m.cookie)
        if not m.open:
            removes.append(Remove(m.name, m.index, SOCKET_CLOSED))
        elif c is None:
            removes.append(Remove(m.name, m.index, "no longer a listener of the port"))
        elif c.pid and not c.weak and _mismatch(spec, c):
            removes.append(Remove(m.name, m.index, f"pid {c.pid} {c.comm}: {_mismatch(spec, c)}"))
        else:
            staying.append(m)
            # No process told apart, or only one holding it without serving it (a prefork
            # server's parent between two generations of children): keep the record until one is.
            if c.pid and not c.weak and _moved(m, c):
                refreshes.append(Refresh(m.name, m.index, c.pid, c.fd, m.pid, c.shared))

    unmanaged: list[Unmanaged] = []
    joining: list[Candidate] = []
    staying_cookies = {m.cookie for m in staying}
    for c in observed.listeners:
        if c.cookie in staying_cookies:
            continue
        why = _mismatch(spec, c)
        if why:
            unmanaged.append(Unmanaged(c.cookie, c.inode, c.pid, c.comm, why))
        else:
            joining.append(c)
    names = assign_names(spec.names, [Newcomer(c.comm, c.pid, c.fd) for c in joining], {m.name for m in staying})
    taken = {m.name for m in staying}
    for c, name in zip(joining, names):
        if name in taken:
            raise InvalidInput(f"group {spec.name}: key 'names' {spec.names!r} gives {name!r} to two listeners "
                               "(add {i} to it)")
        taken.add(name)

    def weight(name: str) -> int:
        return spec.weights.get(name, spec.default_weight)

    wanted = {n: (weight(n), n in spec.drain, NO_MARK) for n in [m.name for m in staying] + names}
    generation_lines: tuple[str, ...] = ()
    if spec.rollout is not None:
        gone = {r.index for r in removes}
        steered = steer(spec.name, spec.rollout,
                        [Seatholder(m.name, listeners[m.cookie].generation_key, m.mark, *wanted[m.name][:2])
                         for m in staying]
                        + [Seatholder(n, c.generation_key, NO_MARK, *wanted[n][:2]) for c, n in zip(joining, names)],
                        [m.mark for m in observed.members if m.index in gone], verdict)
        wanted, generation_lines = steered.members, steered.lines
    adds = tuple(Add(n, c.cookie, c.pid, c.fd, c.comm, wanted[n][0], wanted[n][1], c.shared, wanted[n][2],
                     _asked_id(spec, observed, c.cookie)) for c, n in zip(joining, names))
    reweighs = tuple(Reweigh(m.name, m.index, *wanted[m.name][:2], m.weight, m.draining)
                     for m in staying if wanted[m.name][:2] != (m.weight, m.draining))
    # Without `generations` in the file, members keep no generation (one the file had is cleared).
    marks = tuple(Remark(m.name, m.index, wanted[m.name][2]) for m in staying if wanted[m.name][2] != m.mark)
    unknown = tuple(sorted(n for n in {*spec.weights, *spec.drain} if n not in taken))

    create = not observed.exists and bool(adds)
    changed = bool(adds or removes or refreshes)
    pin: Optional[PinSpec] = None
    if (observed.exists or create) and spec.pin != observed.pin:
        pin = spec.pin
    elif spec.pin.mode != "weighted" and changed:
        pin = spec.pin  # a new or departed member, or a new process: the assignment is computed again
    pids = {m.name: m.pid for m in staying}
    pids.update({r.name: r.pid for r in refreshes})
    pids.update({a.name: a.pid for a in adds})
    weak = {m.name for m in staying if listeners[m.cookie].weak} | {n for c, n in zip(joining, names) if c.weak}
    return Plan(**base, create=create, options=spec.options if create else NONE_GIVEN, adds=adds, removes=tuple(removes), refreshes=tuple(refreshes),
                reweighs=reweighs, pin=pin, unmanaged=tuple(unmanaged), unknown_names=unknown, pids=pids,
                unserved=tuple(sorted(weak)), marks=marks, generation_lines=generation_lines)


def _asked_id(spec: GroupSpec, observed: Observed, cookie: int) -> Optional[str]:
    """The QUIC server id a joining socket asks for: from its cookie when the file says so."""
    if not spec.quic_ids_from_cookie:
        return None
    length = (observed.options if observed.exists else spec.options).quic_server_id_length
    length = length or quic.DEFAULT_SERVER_ID_LENGTH
    return quic.format_server_id(quic.of_cookie(cookie, length), length)


# execute -------------------------------------------------------------------------


def _execute(p: Plan, layout: Layout, group_locked: bool) -> dict[str, int]:
    """Carry out `p`; the caller holds the namespace's lock when p.create, and
    the group's lock when group_locked."""
    what = f"apply group {p.group}"
    probe.require_bpf_privileges(what)
    if p.adds:
        probe.require_ptrace(what)
    if p.create:
        probe.require_kernel()
    # Every new member's socket is taken before anything changes: a process gone since observe() refuses the plan.
    news = [NewMember(a.name, a.pid, a.fd, a.weight, a.draining, cookie=a.cookie, shared=a.shared,
                      what=f"{what}: {a.name}", mark=a.mark, quic_server_id=a.quic_server_id) for a in p.adds]
    with taken(news) as joining:
        info = joining[0].info if p.create else None
        with opened_or_created(layout, p.group, info, p.options, locked=group_locked) as (g, _):
            return _write(g, p, joining)


def _write(g: Group, p: Plan, joining: list[Joining]) -> dict[str, int]:
    policies = {r.index: None for r in p.removes}
    policies.update({r.index: new_policy(r.weight, r.draining) for r in p.reweighs})
    pin_plan = None
    if p.pin is not None:
        from .pin import plan_pins

        def pin_plan(index: dict[str, int]):
            return plan_pins(p.pin.mode, p.pin.dev, index, {n: p.pids[n] for n in index if n in p.pids}, p.key)

    moved = {r.index: Moved(r.pid, r.fd, r.shared) for r in p.refreshes}
    return update_members(g, g.members(), joining, moved, policies, pin_plan,
                          marks={r.index: r.mark for r in p.marks})


@contextlib.contextmanager
def _locked(layout: Layout, group: str) -> Iterator[bool]:
    """The group's lock (yields True); the namespace's instead when the group
    does not exist yet (yields False: it may be created, and the group's lock
    is taken after, in the order register takes them)."""
    if os.path.isdir(layout.group_dir(group)):
        with layout.group_lock(group):
            yield True
        return
    with layout.ns_lock():
        layout.sweep_temp_dirs()
        yield False


def execute(p: Plan, layout: Optional[Layout] = None) -> dict[str, int]:
    """Carry out plan `p` (made by plan() from a recent observe()): all of the
    group's changes in one publish, the group created first when `p.create`.
    Returns name -> index in the socket array of the members after it ({}
    for an empty plan, which changes nothing)."""
    if p.empty:
        return {}
    layout = layout or Layout()
    lock = layout.ns_lock() if p.create else contextlib.nullcontext()
    with lock:
        return _execute(p, layout, group_locked=False)


def reconcile(spec: GroupSpec, layout: Optional[Layout] = None, dry_run: bool = False,
              look: Optional[Look] = None, verdict: Optional[Verdict] = None,
              pin_or_keep: bool = False) -> Plan:
    """Observe, plan and (unless dry_run or nothing to do) execute, under the
    group's lock (the namespace's when the group may be created).  `look`:
    one look at the namespace shared by every group of a file (watch.Look:
    one discover of each protocol, not one per group); None: a look of this
    group's own.  `verdict`: given to the newest generation in the same
    publish (promote, rollback).  `pin_or_keep` (serve): a pin the members
    cannot take is left out of the plan (without_refused_pin) instead of
    refusing the whole plan.  Returns the plan."""
    if verdict is not None and spec.rollout is None:
        raise InvalidInput(f"group {spec.name}: the file gives it no generations "
                           "(add generations = { canary = 5 } to its [[group]])")
    if spec.run is not None:
        return plan(spec, Observed(spec.name, spec.listen))
    probe.require_bpf_privileges(f"apply group {spec.name}")
    layout = layout or Layout()
    with _locked(layout, spec.name) as group_locked:
        listeners = (candidates(look.served(spec.listen), look.identity, keyed_by(spec)) if look is not None
                     else None)
        p = plan(spec, observe(spec, layout, listeners), verdict)
        if pin_or_keep and not dry_run:
            p = without_refused_pin(p)
        if not (dry_run or p.empty):
            _execute(p, layout, group_locked)
    return p


def without_refused_pin(p: Plan) -> Plan:
    """`p`, or, when the members after it cannot take its pin (two of them
    allowed on one CPU after a reload to more workers than CPUs, a device
    without RSS), `p` without the pin and the reason in pin_refused: the
    members and weights are published, the live pin mode stays as it was.
    For serve, which must follow the listeners whatever the file's pin; apply
    refuses the whole group instead (nothing half-applied)."""
    if p.pin is None or p.pin.mode == WEIGHTED.mode:
        return p
    from .pin import plan_pins

    try:
        # The pin's feasibility depends on the members' CPUs, not on their indexes.
        plan_pins(p.pin.mode, p.pin.dev, {n: i for i, n in enumerate(p.pids)}, p.pids, p.key)
    except RpctlError as e:
        return replace(p, pin=None, pin_refused=f"{p.pin.text} not applied, the live pin mode stays: {e}")
    return p
