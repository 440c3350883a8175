"""controller/ops/adaptive_loop.py: one adaptive group's samples, with its maps and serve's look made up:
the queues come from the look, the group stays open between samples and is opened again only when its
pinned folder is another one."""

from __future__ import annotations

import os
import socket

import pytest
from rpctl.controller.contract import abi
from rpctl.controller.kernel.sockets import EndpointKey
from rpctl.controller.ops import adaptive_loop
from rpctl.controller.tables import adaptive

KEY = EndpointKey("tcp", socket.AF_INET, "127.0.0.1", 8080)
SETTINGS = adaptive.Settings(queue=8, interval_ms=25)


class FakeGroup:
    """Two live members, worker-1 (cookie 11) and worker-2 (cookie 12); what is published is kept."""

    def __init__(self, opened: list):
        self.closed = False
        self.published: list = []
        opened.append(self)

    def members(self):
        return [abi.RpMember(name=b"worker-1", cookie=11), abi.RpMember(name=b"worker-2", cookie=12)]

    def live_weights(self, members):
        return {0: 1, 1: 1}

    def close(self):
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class FakeLook:
    def __init__(self, queues: dict[int, int]):
        self.queues_of = queues
        self.asked: list = []

    def queues(self, key):
        self.asked.append(key)
        return self.queues_of


class Layout:
    def __init__(self, root):
        self.root = root

    def group_dir(self, name):
        return os.path.join(self.root, name)


@pytest.fixture
def opened(monkeypatch, tmp_path):
    """The FakeGroups the loop opened, in order; the group's folder is tmp_path/web."""
    groups: list[FakeGroup] = []
    monkeypatch.setattr(adaptive_loop.Group, "open", classmethod(lambda cls, name, layout: FakeGroup(groups)))
    monkeypatch.setattr(adaptive_loop, "set_adaptive", lambda g, on: False)
    monkeypatch.setattr(adaptive_loop, "put_throttle",
                        lambda g, throttled, lease, sampled=0: g.published.append(dict(throttled)))
    (tmp_path / "web").mkdir()
    return groups


def test_the_queues_come_from_the_look_and_the_group_stays_open(opened, tmp_path):
    loop = adaptive_loop.AdaptiveLoop("web", Layout(str(tmp_path)), KEY)
    look = FakeLook({11: 0, 12: 9, 99: 50})  # 99: a listener of the endpoint that is no member
    now = 0.0
    for _ in range(100):  # 2.5 s of samples, the members read again every second
        now = loop.step(now, SETTINGS, look)
    assert len(opened) == 1 and not opened[0].closed, "one open for every sample and every read of the members"
    assert look.asked == [KEY] * 100
    assert opened[0].published[-1].keys() == {1}, "worker-2's queue built while worker-1's is empty"


def test_a_group_made_anew_under_the_same_name_is_opened_anew(opened, tmp_path):
    loop = adaptive_loop.AdaptiveLoop("web", Layout(str(tmp_path)), KEY)
    look = FakeLook({11: 0, 12: 0})
    loop.step(0.0, SETTINGS, look)
    # Unloaded and made again: another folder (the old one kept aside, so its inode is not reused).
    os.rename(tmp_path / "web", tmp_path / "web.old")
    (tmp_path / "web").mkdir()
    loop.step(0.5, SETTINGS, look)
    assert len(opened) == 1, "the members are read every MEMBERS_AGE, not at every sample"
    loop.step(adaptive_loop.MEMBERS_AGE, SETTINGS, look)
    assert len(opened) == 2 and opened[0].closed and not opened[1].closed
    # After a reconcile the members are read again at once, from the same open maps.
    loop.stale()
    loop.step(adaptive_loop.MEMBERS_AGE + 0.1, SETTINGS, look)
    assert len(opened) == 2
    loop.close()  # adaptive off: nobody throttled, in the group as it is now
    assert all(g.closed for g in opened) and opened[-1].published == [{}]
