"""The weighted slot table: which member each slot of the hash space selects.

The BPF program steers a new connection to ``table[hash & (slots - 1)]``.
A member's share of the traffic is therefore its share of the slots, and
changing the table moves exactly the connections whose slot changed value.
This module computes that table; it is pure logic so it can be tested
without privileges.

Algorithm
---------
1. *Quotas.*  :func:`apportion` turns weights into slot counts with
   Hamilton's largest-remainder method: every member gets the floor of its
   exact share and the leftover slots go to the largest remainders.  Counts
   sum to ``slots`` and each is within one slot of exact, so every share is
   within ``1/slots`` of ``weight / sum(weights)``.

2. *Keep what still fits.*  Starting from the previous table, a member keeps
   every slot it holds up to its new quota.  A member over quota releases
   only its excess; a member that left, or went to weight 0, releases all.
   The number of changed slots is then the least any table with these quotas
   can achieve (the total variation distance between the old and new
   counts).  Maglev hashing would rebuild the table from per-member
   permutations: on a weight change it moves noticeably more than this
   minimum and its shares are only approximate.  Our result depends on
   history, which Maglev avoids, but nothing is lost by that here: the live
   table is pinned in the kernel, so the controller reads it back as
   ``previous`` even after a restart.

3. *Spread the releases.*  The excess slots a member gives up are evenly
   spaced among the slots it holds, not its first ones.  Slots are chosen by
   the low bits of the hash, and those can be weak (for example, one client
   opening connections from sequential ports).  Releasing a contiguous block
   would move a correlated set of flows and leave every member's slots in
   blocks for the next change to cut further.

4. *Interleave the fills.*  Released slots are walked in ascending order
   and handed to members below quota in proportion to their deficits by
   stride scheduling, the closed form of smooth weighted round robin.
   Member ``m``'s ``k``-th new slot is due at ``(k + 1/2) / deficit[m]`` of
   the way through the free list, and all dues are merged in time order,
   with ties going to the lower member.  Every member's share of any prefix
   of the free list therefore stays within about one slot of its due share,
   so new slots interleave instead of forming one block.  The round-robin
   loop itself would cost O(free slots x members), too slow in Python for
   256 members; the merge is one sort.

A fresh table is the same procedure with every slot free.  If every weight
is zero, every slot is :data:`NO_MEMBER` and the program falls back to its
list of live members.
"""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Mapping, Sequence

__all__ = [
    "DEFAULT_SLOTS",
    "MAX_MEMBERS",
    "NO_MEMBER",
    "apportion",
    "build_table",
    "empty_table",
    "min_moved_fraction",
    "moved_fraction",
    "shares",
]

#: Slot value that selects nobody: a table with no live member.
NO_MEMBER = 0xFFFFFFFF
#: Members are indices 0..MAX_MEMBERS-1 in the socket array.
MAX_MEMBERS = 256
#: Slots in one table (RP_SLOTS in bpf/rpctl.h).
DEFAULT_SLOTS = 1 << 10

# Due times are fixed point numbers with this many fractional bits: exact
# comparisons for deficits up to 2**19 slots, and still deterministic beyond.
_DUE_BITS = 40
_MEMBER_BITS = 8  # the low bits of a due-time key hold the member index
_MEMBER_MASK = (1 << _MEMBER_BITS) - 1


def _is_int(value: object) -> bool:
    # bool is an int subclass, but True as a weight or a member is a bug.
    return isinstance(value, int) and not isinstance(value, bool)


def _check_slots(slots: int) -> None:
    if not _is_int(slots) or slots < 2 or slots & (slots - 1):
        raise ValueError(f"slots must be a power of two >= 2, got {slots!r}")


def _check_weights(weights: Mapping[int, int]) -> None:
    for member, weight in weights.items():
        if not _is_int(member) or not 0 <= member < MAX_MEMBERS:
            raise ValueError(f"member must be an int in 0..{MAX_MEMBERS - 1}, got {member!r}")
        if not _is_int(weight):
            raise ValueError(f"weight of member {member} must be an int, got {weight!r}")
        if weight < 0:
            raise ValueError(f"weight of member {member} must be >= 0, got {weight}")


def _check_previous(previous: Sequence[int], slots: int) -> array[int]:
    if len(previous) != slots:
        raise ValueError(f"previous table has {len(previous)} slots, expected {slots}")
    try:
        table = array("I", previous if isinstance(previous, array) else list(previous))
    except (TypeError, OverflowError) as exc:
        raise ValueError(f"previous table holds a value that is not a slot value: {exc}") from None
    values = set(table)
    values.discard(NO_MEMBER)
    if values and max(values) >= MAX_MEMBERS:
        raise ValueError(
            f"previous table holds {max(values)}, neither a member (0..{MAX_MEMBERS - 1}) "
            f"nor NO_MEMBER ({NO_MEMBER:#x})"
        )
    return table


def apportion(weights: Mapping[int, int], slots: int) -> dict[int, int]:
    """Slot counts per member, by largest remainder so that every share is exact to one slot.

    Members of positive weight are all present (a tiny weight may round to 0
    slots); members of weight 0 are left out.  Ties in the remainder go to the
    lower member so that the same weights always give the same counts.
    """
    _check_slots(slots)
    _check_weights(weights)
    members = sorted(m for m, w in weights.items() if w > 0)
    total = sum(weights[m] for m in members)
    if not total:
        return {}
    counts = {}
    remainders = []
    for m in members:
        counts[m], rem = divmod(weights[m] * slots, total)
        remainders.append((-rem, m))
    remainders.sort()
    for _, m in remainders[: slots - sum(counts.values())]:
        counts[m] += 1
    return counts


def _interleave(deficits: Sequence[tuple[int, int]]) -> list[int]:
    """Members in the order their new slots fall due, so that each member's slots spread evenly."""
    keys: list[int] = []
    one, shift = 1 << _DUE_BITS, _MEMBER_BITS
    for m, d in deficits:
        # The k-th slot of m is due at (2k + 1) / (2d), as a fixed point key.
        d2 = 2 * d
        keys.extend([(x // d2) << shift | m for x in range(one, d2 * one, 2 * one)])
    keys.sort()
    mask = _MEMBER_MASK
    return [key & mask for key in keys]


def _release(table: array[int], quota: list[int]) -> tuple[list[int], list[tuple[int, int]]]:
    """Slots to refill and each member's shortfall, keeping every slot that is still within quota."""
    # Where each member sits now; NO_MEMBER slots are free from the start.
    held: list[list[int]] = [[] for _ in range(MAX_MEMBERS)]
    free: list[int] = []
    free_append = free.append
    for i, v in enumerate(table):
        if v == NO_MEMBER:
            free_append(i)
        else:
            held[v].append(i)

    deficits = []
    for m, pos in enumerate(held):
        have, keep = len(pos), quota[m]
        if have > keep:
            # Evenly spaced: the middle slot of each of `excess` equal runs (all of them if keep is 0).
            excess = have - keep
            free.extend([pos[(2 * k + 1) * have // (2 * excess)] for k in range(excess)])
        elif have < keep:
            deficits.append((m, keep - have))
    return free, deficits


def build_table(
    weights: Mapping[int, int],
    previous: Sequence[int] | None = None,
    slots: int = DEFAULT_SLOTS,
) -> array[int]:
    """The next table: exact shares, moving no more slots than the new quotas force.

    ``previous`` is the live table; ``None`` (or all NO_MEMBER) builds from
    scratch.  Slots of members missing from ``weights`` are released, which
    is how a removed member loses its traffic.
    """
    counts = apportion(weights, slots)
    table = None if previous is None else _check_previous(previous, slots)
    if not counts:
        return empty_table(slots)

    if table is None:
        return array("I", _interleave(sorted(counts.items())))

    quota = [0] * MAX_MEMBERS
    for m, c in counts.items():
        quota[m] = c
    free, deficits = _release(table, quota)
    free.sort()
    for i, m in zip(free, _interleave(deficits)):
        table[i] = m
    return table


def empty_table(slots: int = DEFAULT_SLOTS) -> array[int]:
    """A table that names nobody."""
    return array("I", [NO_MEMBER]) * slots


def shares(table: Sequence[int]) -> dict[int, float]:
    """Fraction of the hash space per member: the traffic share the table gives it."""
    if not len(table):
        return {}
    counts = Counter(table)
    counts.pop(NO_MEMBER, None)
    return {m: counts[m] / len(table) for m in sorted(counts)}


def moved_fraction(old: Sequence[int], new: Sequence[int]) -> float:
    """Fraction of the hash space whose member changed: new connections there go elsewhere."""
    if len(old) != len(new):
        raise ValueError(f"tables differ in length: {len(old)} and {len(new)}")
    if not len(old):
        return 0.0
    return sum(a != b for a, b in zip(old, new)) / len(old)


def min_moved_fraction(old_weights: Mapping[int, int], new_weights: Mapping[int, int]) -> float:
    """The share of hash space any table must move for this weight change (before rounding to slots)."""
    _check_weights(old_weights)
    _check_weights(new_weights)
    old_total = sum(old_weights.values())
    new_total = sum(new_weights.values())
    if not old_total:
        return 1.0 if new_total else 0.0
    from fractions import Fraction  # exact shares here alone: a command that imports this table does not pay

    moved = Fraction(0)
    for m, w in old_weights.items():
        old_share = Fraction(w, old_total)
        new_share = Fraction(new_weights.get(m, 0), new_total) if new_total else Fraction(0)
        if old_share > new_share:
            moved += old_share - new_share
    return float(moved)
