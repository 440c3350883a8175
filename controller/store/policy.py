"""A member's policy in a generation: its weight, its drain flag, and whether it is live.

Every generation carries one policy per member (struct rp_policy: weight,
flags).  This module is the one place that reads and makes them: a weight
checked, a policy made from a weight and a drain flag, and is_live(), the
one answer to "does this member take new connections" that the group
store, the read model and the daemons share.
"""

from __future__ import annotations

from ..contract import abi
from ..contract.errors import InvalidInput
from ..contract.refs import shown

MAX_WEIGHT = 10000
DEFAULT_WEIGHT = 1


def check_weight(name: str, weight: object) -> int:
    if isinstance(weight, bool) or not isinstance(weight, int):
        raise InvalidInput(f"weight of {shown(name)}: {weight!r} is not a whole number")
    if not 0 <= weight <= MAX_WEIGHT:
        raise InvalidInput(f"weight of {shown(name)}: {weight} is out of range 0..{MAX_WEIGHT}")
    return weight


def new_policy(weight: int, draining: bool = False) -> abi.RpPolicy:
    """The policy of a present member of `weight`, draining or not."""
    return abi.RpPolicy(weight, abi.RP_POLICY_PRESENT | (abi.RP_POLICY_DRAINING if draining else 0))


def draining_flag(pol: abi.RpPolicy) -> bool:
    """Whether a policy has the member draining."""
    return bool(pol.flags & abi.RP_POLICY_DRAINING)


def is_live(weight: int, draining: bool, socket_open: bool) -> bool:
    """Whether a present member takes new connections: weight above 0, not
    draining, and its socket still in the socket array (the kernel drops a
    closed socket from it by itself; such a member is `gone`)."""
    return weight > 0 and not draining and socket_open
