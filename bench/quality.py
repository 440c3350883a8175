"""Steering quality: how close each member's share is to its weight, and how
little of the hash space a change moves.

Two levels, side by side:
- the table: controller/tables/slot_table.py's slot table itself (pure, exact), at 4,
  64 and 256 members;
- the kernel: real TCP connections from varied loopback sources to a group
  of 4 registered members in a fresh network namespace, and the same sources
  connecting again after a change (so "moved" counts connections whose
  member really changed), next to the live slot table read back from the
  pinned map before and after.
The minimum a change must move is the total variation distance between the
old and new shares (slot_table.min_moved_fraction).
"""

from __future__ import annotations

import collections
import itertools
import math
from dataclasses import dataclass
from typing import Callable

from rpctl.controller.contract import abi
from rpctl.controller.store import group as groups
from rpctl.controller.tables import slot_table

from bench.common import alternate, table, write_section
from tests.support.netns import fresh_netns
from tests.support.traffic import Members, tcp_connections, tcp_placements, tcp_sources

SECTION = "steering-quality"
PORT = 7400
GOAL_TABLE_PP, GOAL_REAL_PP, GOAL_MOVED = 0.5, 1.5, 1.2

KERNEL_MEMBERS = 4
# Weight vectors of KERNEL_MEMBERS members: the canary's 1 is 1 % of 100.
VECTORS = {"even": [1, 1, 1, 1], "1:2:3:4": [1, 2, 3, 4], "canary at 1 %": [33, 33, 33, 1]}
TABLE_SIZES = (4, 64, 256)
MOVE_SIZES = (4, 64, 255)  # 255: "add a member" needs one of the 256 indexes free
CONNECTIONS, QUICK_CONNECTIONS = 40000, 400  # per vector and round
ROUNDS, QUICK_ROUNDS = 3, 1
SOURCES, QUICK_SOURCES = 40000, 300


def pp(x: float, digits: int = 2) -> str:
    return f"{100 * x:.{digits}f} pp"


def sigma(p: float, n: int) -> float:
    """Binomial sampling error of a share p measured over n trials."""
    return math.sqrt(p * (1 - p) / n)


def shares_of(weights: list[int]) -> list[float]:
    return [w / sum(weights) for w in weights]


# The table (pure) -------------------------------------------------------------


def table_error(weights: list[int]) -> float:
    """Largest |share in the table - weight share| over the members."""
    got = slot_table.shares(slot_table.build_table(dict(enumerate(weights))))
    return max(abs(got.get(i, 0.0) - want) for i, want in enumerate(shares_of(weights)))


def vector_for(name: str, n: int) -> list[int]:
    """VECTORS stretched to n members: even; 1..4 repeating; the last one a 1 % canary."""
    if name == "even":
        return [1] * n
    if name == "1:2:3:4":
        return [1 + i % 4 for i in range(n)]
    return [99] * (n - 1) + [n - 1]  # (n - 1) / (99 (n - 1) + n - 1) = 1 %


@dataclass
class Change:
    """One change, applied in turn to a group of n members that starts even."""

    name: str
    weights: Callable[[dict[int, int], int], dict[int, int]]  # (live weights, n) -> live weights after
    make: Callable[[Members, str, int], None]  # the same change on a real group: (members, group, n)


def _set(weights: dict[int, int], member: int, weight: int) -> dict[int, int]:
    out = dict(weights)
    out[member] = weight
    return {m: w for m, w in out.items() if w}


CHANGES = [
    Change("weight of one member 1 -> 2", lambda w, n: _set(w, 0, 2),
           lambda m, g, n: groups.set_weights({"w0": 2}, group=g)),
    Change("drain one member", lambda w, n: _set(w, n - 1, 0),
           lambda m, g, n: groups.set_draining(f"w{n - 1}", True, group=g)),
    Change("add a member", lambda w, n: _set(w, n, 1),
           lambda m, g, n: m.register_all(first=n)),  # Members holds a spare socket at position n
]


def table_moves(n: int) -> list[tuple[str, float, float]]:
    """(change, moved, minimum) for CHANGES applied in turn to n even members."""
    weights = {i: 1 for i in range(n)}
    live = slot_table.build_table(weights)
    out = []
    for change in CHANGES:
        new_weights = change.weights(weights, n)
        new = slot_table.build_table(new_weights, live)
        out.append((change.name, slot_table.moved_fraction(live, new), slot_table.min_moved_fraction(weights, new_weights)))
        weights, live = new_weights, new
    return out


# The kernel -------------------------------------------------------------------


def real_errors(members: Members, group: str, connections: int, rounds: int
                ) -> dict[str, tuple[float, float, float, float]]:
    """Per vector, over all rounds: largest |observed - target|, the sampling
    sigma of the largest target, and the smallest member's observed and target shares."""
    seeds = itertools.count(1)

    def one_round(weights: list[int]) -> Callable[[], collections.Counter]:
        def once() -> collections.Counter:
            groups.set_weights({f"w{i}": w for i, w in enumerate(weights)}, group=group)
            counts, failures = tcp_connections(members, connections, seed=next(seeds))
            if failures:
                raise RuntimeError(f"{failures} of {connections} connections failed")
            return counts

        return once

    by_vector = alternate(rounds, {name: one_round(w) for name, w in VECTORS.items()})
    out = {}
    for name, weights in VECTORS.items():
        counts = sum(by_vector[name], collections.Counter())
        total = sum(counts.values())
        target = shares_of(weights)
        err = max(abs(counts[i] / total - t) for i, t in enumerate(target))
        small = min(range(len(target)), key=target.__getitem__)
        out[name] = (err, max(sigma(t, total) for t in target), counts[small] / total, target[small])
    return out


def _live(group: str) -> tuple[dict[int, int], object]:
    """Live weights (index -> weight of members taking connections) and slot table."""
    with groups.Group.open(group) as g:
        members = g.members()
        gen = g.ctl().gen & 1
        return g.live_weights(members, g.live_policies(members)), g.slot_table(gen)


def real_moves(members: Members, group: str, n_sources: int) -> list[tuple[str, float, float, float]]:
    """(change, moved connections, moved slots, minimum) for the CHANGES, made with rpctl's library."""
    groups.set_weights({f"w{i}": 1 for i in range(KERNEL_MEMBERS)}, group=group)
    sources = tcp_sources(n_sources)
    out = []
    weights, live = _live(group)
    before = tcp_placements(members, sources)
    for change in CHANGES:
        change.make(members, group, KERNEL_MEMBERS)
        new_weights, new_live = _live(group)
        after = tcp_placements(members, sources)
        moved = sum(before[s] != after[s] for s in sources) / len(sources)
        out.append((change.name, moved, slot_table.moved_fraction(live, new_live),
                    slot_table.min_moved_fraction(weights, new_weights)))
        weights, live, before = new_weights, new_live, after
    return out


def measure_kernel(connections: int, rounds: int, n_sources: int):
    with fresh_netns("rpctl-q"):
        members = Members(port=PORT)
        try:
            for _ in range(KERNEL_MEMBERS + 1):
                members.add()  # the last one joins later ("add a member")
            group = members.register_all(count=KERNEL_MEMBERS)
            errors = real_errors(members, group, connections, rounds)
            moves = real_moves(members, group, n_sources)
        finally:
            members.close()
    return errors, moves


# Report -----------------------------------------------------------------------


def report(errors, moves, connections: int, rounds: int, n_sources: int) -> str:
    err_rows = []
    for name in VECTORS:
        cells = [name] + [pp(table_error(vector_for(name, n)), 4) for n in TABLE_SIZES]
        real, spread, small, small_target = errors[name]
        smallest = f"{100 * small:.2f} % of {100 * small_target:.0f} %"
        err_rows.append(cells + [f"{pp(real)} (sigma {pp(spread)})", smallest])
    move_rows = []
    for n in MOVE_SIZES:
        for change, moved, minimum in table_moves(n):
            move_rows.append([f"table, {n} members", change, pp(moved), pp(minimum), f"{moved / minimum:.3f}"])
    for change, moved_conns, moved_slots, minimum in moves:
        move_rows.append([f"kernel, {KERNEL_MEMBERS} members", change,
                          f"{pp(moved_conns)} (sigma {pp(sigma(moved_slots, n_sources))}; table {pp(moved_slots)})",
                          pp(minimum), f"{moved_conns / minimum:.3f} (table {moved_slots / minimum:.3f})"])
    return "\n".join([
        "### Steering quality (issue 7, part 3)",
        "",
        "```sh",
        "./scripts/bench.sh quality",
        "```",
        "",
        "Share error: the largest |share - weight share| over the members, in percentage points.",
        "The table column is the slot table controller/tables/slot_table.py builds (the vector stretched to",
        "n members: even; 1, 2, 3, 4 repeating; a last member at 1 %); the kernel column counts",
        f"{connections * rounds} real TCP connections from varied loopback sources per vector ({rounds} rounds, the",
        f"vectors alternating) to {KERNEL_MEMBERS} registered members (sigma: the binomial sampling error",
        "of the largest share, which a perfect steering",
        f"would still show). Goals: table under {GOAL_TABLE_PP} pp, real under {GOAL_REAL_PP} pp.",
        "",
        table(["weights"] + [f"table, {n}" for n in TABLE_SIZES]
              + [f"kernel, {KERNEL_MEMBERS} members", "kernel, smallest member"], err_rows),
        "",
        "Moved share: the part of the hash space whose member changed, against the least any",
        "table must move (the total variation distance between old and new shares). Changes in turn",
        "from even weights; in the kernel, the same",
        f"{n_sources} sources connect before and after each change made through rpctl's library, and",
        "the live slot table is read back from the pinned map. Goal: within",
        f"{GOAL_MOVED}x of the minimum.",
        "",
        table(["where", "change", "moved", "minimum", "moved / minimum"], move_rows),
        "",
        f"Shares move in whole slots (1/{abi.RP_SLOTS} = {100 / abi.RP_SLOTS:.3f} pp): where the minimum is a few",
        "slots (255 members), a change can move one slot less than the unrounded minimum (a ratio",
        "under 1), and the new shares are then within one slot of exact, as the share error shows.",
    ])


def run(quick: bool) -> None:
    connections, rounds, n_sources = (
        (QUICK_CONNECTIONS, QUICK_ROUNDS, QUICK_SOURCES) if quick else (CONNECTIONS, ROUNDS, SOURCES)
    )
    errors, moves = measure_kernel(connections, rounds, n_sources)
    write_section(SECTION, report(errors, moves, connections, rounds, n_sources))
    for name, (err, spread, small, _) in errors.items():
        print(f"{name}: real error {pp(err)} (sigma {pp(spread)}), smallest member {100 * small:.2f} %", flush=True)
    for change, moved, slots, minimum in moves:
        print(f"{change}: moved {pp(moved)}, table {pp(slots)}, minimum {pp(minimum)}", flush=True)
