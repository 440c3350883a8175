"""Hand-built group views: four members, one per state, with known counters; a pinned group."""

from __future__ import annotations

import socket

from rpctl.controller.read.views import GroupView, MemberView, UnmanagedListener


def member(index: int, name: str, **kw) -> MemberView:
    fields = {
        "index": index, "name": name, "pid": 4200 + index, "fd": 3, "cookie": 8193 + index, "weight": 1,
        "draining": False, "gone": False, "selected": 100 * (index + 1), "fallback": index, "migrated": 0,
        "pinned": 7 * index, "since_publish": 10 * (index + 1), "target_share": 0.25, "observed_share": 0.123456789,
        "queue": 2,
    }
    return MemberView(**{**fields, **kw})


def group_view(members=None, **kw) -> GroupView:
    fields = {
        "name": "tcp-18080", "proto": "tcp", "family": socket.AF_INET, "addr": "127.0.0.1", "port": 18080,
        "prog_id": 42, "gen": 1, "mode": "weighted", "published_ns": 1_700_000_000_000_000_000,
        "created_ns": 1_600_000_000_000_000_000, "slot_misses": 5, "no_live_member": 6, "pin_fallbacks": 7,
        "pin_unassigned": 8, "rss_unhashed": 9, "throttle_skips": 10, "unmanaged": [],
    }
    view = GroupView(**{**fields, **kw})
    view.members = members if members is not None else [
        member(0, "worker-1"),
        member(1, "worker-2", draining=True, queue=3),
        member(2, "worker-3", draining=True, queue=0),
        member(3, "worker-4", gone=True),
    ]
    return view


def strays(*holders: tuple) -> list[UnmanagedListener]:
    """Unmanaged listeners held by (pid, comm) each; pid None for one nobody visibly holds."""
    return [UnmanagedListener(cookie=9000 + i, inode=7000 + i, pid=pid, comm=comm)
            for i, (pid, comm) in enumerate(holders)]


STATES = {"worker-1": "active", "worker-2": "draining", "worker-3": "drained", "worker-4": "gone"}


# What the dashboard's tests start from: the same members and group with no counts yet
# (their counters then grow from poll to poll) and only the weighted mode's counters set.
_NO_COUNTS = {"selected": 0, "fallback": 0, "pinned": 0, "since_publish": 0, "observed_share": None, "queue": 0}
_WEIGHTED_GROUP = {"name": "web", "published_ns": 0, "created_ns": 0, "pin_fallbacks": 0, "pin_unassigned": 0,
                   "rss_unhashed": 0}


def moving_member(index: int, name: str, **kw) -> MemberView:
    """member() with no counts yet: the dashboard's tests move its counters from poll to poll."""
    return member(index, name, **{**_NO_COUNTS, **kw})


def moving_group(members, **kw) -> GroupView:
    """group_view() named web, with only the weighted mode's counters (slot misses 5, no live member 6)."""
    return group_view(list(members), **{**_WEIGHTED_GROUP, **kw})


def four(t: float, **overrides) -> GroupView:
    """Four members, one per state, member i getting (i+1)*100 connections a second."""
    specs = [
        ("worker-1", {}),
        ("worker-2", {"draining": True, "queue": 3}),
        ("worker-3", {"draining": True, "queue": 0}),
        ("worker-4", {"gone": True, "queue": None}),
    ]
    members = []
    for i, (name, kw) in enumerate(specs):
        fields = {"selected": int((i + 1) * 100 * t), "fallback": 7 * i, "migrated": 11 * i, **kw}
        fields.update(overrides.get(name, {}))
        members.append(moving_member(i, name, **fields))
    return moving_group(members)


def pinned_view(mode: str = "cpu") -> GroupView:
    """Group web pinned in `mode` ("cpu" or "rss" on eth0): three members with pins, one draining, one with none."""

    def pinned_member(i: int, name: str, pins: list[int], **kw) -> MemberView:
        fields = dict(index=i, name=name, pid=100 + i, fd=3, cookie=9 + i, weight=1, draining=False, gone=False,
                      selected=5, fallback=0, migrated=0, since_publish=0, target_share=0.5, queue=0,
                      pinned=40 + i, pins=pins)
        return MemberView(**{**fields, **kw})

    view = GroupView(name="web", proto="tcp", family=socket.AF_INET, addr="127.0.0.1", port=80, prog_id=7, gen=0,
                     mode=mode, published_ns=0, created_ns=0, pin_dev="eth0" if mode == "rss" else "",
                     pin_fallbacks=3, pin_unassigned=4, rss_unhashed=5)
    view.members = [pinned_member(0, "worker-1", [0, 2]), pinned_member(1, "worker-2", [1], draining=True),
                    pinned_member(2, "worker-3", [])]
    return view
