"""controller/tables/adaptive.py: who is throttled from synthetic queue samples (hysteresis, all loaded, lease)."""

from __future__ import annotations

from rpctl.controller.tables.adaptive import BYTES, DEFAULT_QUEUE_BYTES, LEASE_MS, Change, Reason, Settings, Throttle

MS = 1_000_000


def test_a_member_whose_queue_builds_alone_is_throttled_with_the_reason():
    t = Throttle()
    assert t.update({0: 0, 1: 1, 2: 7, 3: 0}, 0).throttled == {}  # under the threshold: nobody
    v = t.update({0: 0, 1: 1, 2: 37, 3: 2}, 25 * MS)
    assert v.throttled == {2: Reason(37, 2)}
    assert v.changes == (Change(2, True, "queue 37, others <= 2"),)
    assert v.lease_until_ns == 25 * MS + LEASE_MS * MS


def test_release_waits_for_the_queue_to_drain_hysteresis():
    t = Throttle(Settings(queue=8))
    t.update({0: 9, 1: 0}, 0)
    # between release (8 // 4 = 2) and the threshold: still throttled, reason kept from the throttle
    for depth in (8, 5, 3):
        v = t.update({0: depth, 1: 0}, 0)
        assert v.throttled == {0: Reason(9, 0)} and v.changes == ()
    v = t.update({0: 2, 1: 0}, 0)
    assert v.throttled == {} and v.lease_until_ns == 0
    assert v.changes == (Change(0, False, "queue 2, drained"),)
    # and it is not throttled again until it reaches the threshold anew
    assert t.update({0: 7, 1: 0}, 0).throttled == {}


def test_every_member_loaded_throttles_nobody():
    t = Throttle()
    assert t.update({0: 20, 1: 30, 2: 9}, 0).throttled == {}
    t.update({0: 20, 1: 0}, 0)
    v = t.update({0: 20, 1: 12}, 0)  # the other one loads up too: release
    assert v.throttled == {} and v.changes == (Change(0, False, "queue 20, every member loaded"),)


def test_a_new_throttle_needs_another_member_with_room():
    t = Throttle(Settings(queue=8))
    assert t.update({0: 12, 1: 5, 2: 6}, 0).throttled == {}    # the others at over half the threshold
    assert t.update({0: 12, 1: 4, 2: 6}, 0).throttled == {0: Reason(12, 6)}
    assert t.update({0: 12, 1: 7, 2: 7}, 0).throttled == {0: Reason(12, 6)}  # kept: they are under it


def test_on_a_busy_machine_a_queue_far_deeper_than_the_others_is_throttled():
    t = Throttle(Settings(queue=8))
    # Every queue above half the threshold, one of them far deeper: it is the stalled one.
    assert t.update({0: 200, 1: 9, 2: 10, 3: 9}, 0).throttled == {0: Reason(200, 10)}
    # Kept while the others stay under half its queue, though above the threshold.
    assert t.update({0: 150, 1: 12, 2: 20, 3: 11}, 0).throttled == {0: Reason(200, 10)}
    # Released when the others catch up with it.
    v = t.update({0: 40, 1: 30, 2: 35, 3: 38}, 0)
    assert v.throttled == {} and v.changes == (Change(0, False, "queue 40, every member loaded"),)


def test_one_member_alone_is_never_throttled():
    assert Throttle().update({0: 500}, 0).throttled == {}


def test_several_members_may_be_throttled_while_one_serves():
    v = Throttle().update({0: 10, 1: 12, 2: 0}, 0)
    assert v.throttled == {0: Reason(10, 0), 1: Reason(12, 0)}


def test_a_member_no_longer_sampled_is_forgotten():
    t = Throttle()
    t.update({0: 10, 1: 0, 2: 0}, 0)
    v = t.update({1: 0, 2: 0}, 0)
    assert v.throttled == {} and v.changes == (Change(0, False, "no longer a live member"),)


def test_the_lease_is_renewed_at_every_update_while_throttled():
    t = Throttle(Settings(lease_ms=200))
    assert t.update({0: 10, 1: 0}, 1_000 * MS).lease_until_ns == 1_200 * MS
    assert t.update({0: 10, 1: 0}, 1_025 * MS).lease_until_ns == 1_225 * MS


def test_a_udp_member_is_judged_in_bytes_of_its_receive_queue():
    from rpctl.controller.ops import adaptive_loop, config

    (dns,) = config.loads('[[group]]\nname = "dns"\nlisten = "udp:127.0.0.1:53"\nadopt = { comm = "x" }\n'
                          'adaptive = true\n', "f.toml").groups
    s = adaptive_loop.settings_of(dns)
    assert (s.queue, s.release, s.unit) == (DEFAULT_QUEUE_BYTES, DEFAULT_QUEUE_BYTES // 4, BYTES)
    t = Throttle(s)
    # A few datagrams in flight everywhere (about 1 KiB each) are no queue building.
    assert t.update({0: 40_000, 1: 1_280, 2: 0}, 0).throttled == {}
    v = t.update({0: 70_000, 1: 1_280, 2: 0}, 0)
    assert v.changes == (Change(0, True, "queue 70000 bytes, others <= 1280 bytes"),)
    assert t.update({0: 17_000, 1: 0, 2: 0}, 0).throttled == {0: Reason(70_000, 1_280, BYTES)}
    v = t.update({0: 16_000, 1: 0, 2: 0}, 0)
    assert v.throttled == {} and v.changes == (Change(0, False, "queue 16000 bytes, drained"),)
    # TCP keeps its count of connections.
    (web,) = config.loads('[[group]]\nname = "web"\nlisten = "tcp:127.0.0.1:80"\nadopt = { comm = "x" }\n'
                          'adaptive = true\n', "f.toml").groups
    assert adaptive_loop.settings_of(web) == Settings(queue=8) and str(Reason(9, 0)) == "queue 9, others <= 0"
