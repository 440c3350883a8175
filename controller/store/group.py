"""The group store's public face: a group and its members (rpctl.controller.group).

A facade: this module holds no code of its own.  It gathers the names
callers use from the modules of the store, each of one concept:

    generation    Group: the pinned state opened and read; publish, the one flip of a generation
    policy        a member's weight and drain flag, and is_live (does it take new connections)
    lookup        which group: resolve_group, find_group_for, default_group_name
    lifecycle     creating a group whole, unload, the member sockets it reaches
    membership    update_members: the one write path of membership (QUIC server ids included)
    registration  register, register_all, unregister
    steering      set_weights, set_draining, is_draining, adaptive steering and its throttle

Code inside rpctl imports those modules; callers of the library reach these
names here, as `rpctl.controller.group.register` (also
`rpctl.controller.register`).
"""

from __future__ import annotations

from .generation import PROG_PIN, Group, ctl_endpoint, slots_of
from .lifecycle import group_sockets, unload
from .lookup import default_group_name, find_group_for, resolve_group
from .membership import Joining, NewMember, quic_server_id, update_members
from .policy import DEFAULT_WEIGHT, MAX_WEIGHT, check_weight, is_live
from .registration import Registration, register, register_all, unregister
from .steering import is_draining, put_throttle, set_adaptive, set_draining, set_weights

__all__ = [
    "DEFAULT_WEIGHT", "MAX_WEIGHT", "PROG_PIN", "Group", "Joining", "NewMember", "Registration", "check_weight",
    "ctl_endpoint", "default_group_name", "find_group_for", "group_sockets", "is_draining", "is_live",
    "put_throttle", "quic_server_id", "register", "register_all", "resolve_group", "set_adaptive", "set_draining",
    "set_weights", "slots_of", "unload", "unregister", "update_members",
]
