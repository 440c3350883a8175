"""controller/store/audit.py: each change of steering worded old -> new, and sent as one line."""

from __future__ import annotations

import time

from rpctl.controller.contract import abi
from rpctl.controller.kernel.sockets import EndpointKey
from rpctl.controller.store import audit
from rpctl.controller.store.policy import new_policy
from rpctl.controller.tables import pin_table
from rpctl.controller.tables.adaptive import Reason

ACTIVE = 0  # the live generation of these tests


def members(*entries: tuple[str, int, bool]) -> list[abi.RpMember]:
    """Member entries at indexes 0.. from (name, weight, draining) of the live generation
    (a weight of None: used, but not in the live generation: a member that joins now)."""
    out = [abi.RpMember() for _ in range(abi.RP_MAX_MEMBERS)]
    for i, (name, weight, draining) in enumerate(entries):
        m = out[i]
        m.name, m.pid, m.fd, m.flags, m.incarnation = name.encode(), 100 + i, 3, abi.RP_MEMBER_USED, 1
        if weight is not None:
            m.policy[ACTIVE] = new_policy(weight, draining)
    return out


def gen(published: bool = True, mode: int = abi.RP_MODE_WEIGHTED, pins: dict | None = None,
        incarnations: int = 1) -> abi.RpGen:
    g = abi.RpGen()
    pin_table.write_plan(g, pin_table.PinPlan(mode, pins or {}))
    g.published_ns = time.time_ns() if published else 0
    for i in range(abi.RP_MAX_MEMBERS):
        g.incarnation[i] = incarnations
    return g


def test_weights_and_drains_are_worded_old_to_new():
    ms = members(("web-1", 1, False), ("web-2", 1, False), ("web-3", 2, True))
    final = {0: new_policy(3, False), 1: new_policy(1, True), 2: new_policy(2, False)}
    assert audit.generation_change(ms, ACTIVE, final, gen(), gen()) == (
        "web-1 weight 1 -> 3; web-2 active -> draining; web-3 draining -> active"
    )


def test_members_that_join_leave_or_get_a_new_socket():
    ms = members(("web-1", 1, False), ("web-2", 1, False), ("web-3", None, False))
    final = {0: new_policy(1, False), 1: None, 2: new_policy(4, True)}
    after = gen()
    after.incarnation[0] = 2  # web-1's index holds another socket now
    assert audit.generation_change(ms, ACTIVE, final, gen(), after) == (
        "web-1 new socket (pid 100 fd 3); - web-2; + web-3 (pid 102 fd 3, weight 4, draining)"
    )


def test_a_groups_first_generation_says_created_and_where():
    ms = members(("w1", None, False))
    change = audit.generation_change(ms, ACTIVE, {0: new_policy(1, False)}, gen(published=False), gen(),
                                     endpoint="tcp:127.0.0.1:8080")
    assert change == "created (tcp:127.0.0.1:8080); + w1 (pid 100 fd 3, weight 1, active)"


def test_the_pin_mode_and_who_serves_which_cpu():
    ms = members(("w1", 1, False), ("w2", 1, False))
    same = {0: new_policy(1, False), 1: new_policy(1, False)}
    pinned = gen(mode=abi.RP_MODE_CPU, pins={0: 0, 1: 1, 2: 0})
    assert audit.generation_change(ms, ACTIVE, same, gen(), pinned) == "pin weighted -> cpu (w1=0,2 w2=1)"
    assert audit.generation_change(ms, ACTIVE, same, pinned, gen()) == "pin cpu (w1=0,2 w2=1) -> weighted"
    # A drained member keeps its CPUs in the table (marked unavailable): no pin change to report.
    unavailable = gen(mode=abi.RP_MODE_CPU, pins={0: 0, 1: 1, 2: 0})
    pin_table.refresh(unavailable, present=[0, 1], available=[1])
    drained = {0: new_policy(1, True), 1: new_policy(1, False)}
    assert audit.generation_change(ms, ACTIVE, drained, pinned, unavailable) == "w1 active -> draining"


def test_a_publish_that_changes_nothing_visible_logs_nothing(syslog):
    ms = members(("w1", 1, False))
    audit.published("web", "netns1", ms, ACTIVE, {0: new_policy(1, False)}, gen(), gen(),
                    endpoint=lambda: (_ for _ in ()).throw(AssertionError("asked for the endpoint")))
    assert syslog.entries() == []


def test_a_publish_sends_one_line_and_asks_the_endpoint_only_for_a_new_group(syslog):
    ms = members(("w1", None, False))
    key = EndpointKey("tcp", 2, "127.0.0.1", 8080)
    audit.published("web", "netns1", ms, ACTIVE, {0: new_policy(1, False)}, gen(published=False), gen(),
                    endpoint=lambda: key)
    (entry,) = syslog.entries()
    assert entry.fields["group"] == "web" and entry.fields["netns"] == "netns1"
    assert entry.fields["change"] == f"created ({key.text}); + w1 (pid 100 fd 3, weight 1, active)"


def test_throttles_are_logged_when_the_throttled_members_change(syslog):
    ms = members(("w1", 1, False), ("w2", 1, False))
    previous = abi.RpThrottle(lease_ns=time.monotonic_ns() + 10**9)
    previous.bits[0] = 0b10  # w2 throttled
    audit.throttled("web", "netns1", previous, {1: Reason(9, 1)}, lambda: ms)
    assert syslog.entries() == []  # the same member still throttled: nothing new
    audit.throttled("web", "netns1", previous, {0: Reason(12, 2)}, lambda: ms)
    assert syslog.changes() == [("web", "w1 throttled (queue 12, others <= 2); w2 released")]
    # A lease that ran out released everybody already.
    previous.lease_ns = time.monotonic_ns() - 1
    audit.throttled("web", "netns1", previous, {}, lambda: ms)
    assert syslog.entries() == []


def test_unload_and_cleanup_lines(syslog):
    audit.unloaded("web", True, "netns1")
    audit.unloaded("api", False, "netns1")
    audit.namespace_removed("netns77", ["a", "b"])
    assert syslog.changes() == [
        ("web", "unloaded: program detached, the sockets are back on the kernel's own selection"),
        ("api", "unloaded: state removed; no member socket was reachable to detach the program"),
        ("a,b", "removed the state of dead network namespace netns77"),
    ]


def test_an_empty_change_sends_nothing(syslog):
    audit.record("web", "")
    assert syslog.entries() == []
