"""controller/ops/drain.py's wait, on a fake clock, with views read from a script instead of a
group's maps.  The group is resolved for real, in a state folder under tmp_path; opening it
(its pinned maps) is replaced.  No privileges, no sleeping."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
from rpctl.controller.contract import abi
from rpctl.controller.contract.errors import InvalidInput, NotFound, UsageError, WaitTimeout
from rpctl.controller.kernel import diag
from rpctl.controller.ops import drain
from rpctl.controller.read.views import DRAINED, GONE, GroupView
from rpctl.controller.store.state import Layout

from tests.support.views import group_view, member


class Clock:
    """time as drain sees it: monotonic() moves only when the wait sleeps."""

    def __init__(self) -> None:
        self.start = self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class Script:
    """The group as the wait reads it: one view a read, the last one again once they run out."""

    def __init__(self, monkeypatch, layout: Layout, proto: int = abi.RP_PROTO_TCP):
        self.views: list[GroupView] = []
        self.reads = 0
        self.opened: list[str] = []
        self.closed = 0
        self.handshake_ports: list[int] = []
        self.handshakes = 1
        script = self

        class OpenGroup:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                script.closed += 1

            def ctl(self):
                return SimpleNamespace(proto=proto)

        def open_group(name, layout_given):
            assert layout_given is layout
            script.opened.append(name)
            return OpenGroup()

        def read_group(g):
            assert isinstance(g, OpenGroup)
            view = self.views[min(self.reads, len(self.views) - 1)]
            self.reads += 1
            return view

        def handshakes(port):
            self.handshake_ports.append(port)
            if isinstance(self.handshakes, Exception):
                raise self.handshakes
            return self.handshakes

        monkeypatch.setattr(drain, "Group", SimpleNamespace(open=open_group))
        monkeypatch.setattr(drain, "read_group", read_group)
        monkeypatch.setattr(diag, "handshakes", handshakes)

    def then(self, **w1) -> Script:
        """One more read: member w1 as given (draining unless said), beside an active w2."""
        fields = {"draining": True, "queue": 0, **w1}
        self.views.append(group_view([member(0, "w1", **fields), member(1, "w2")], name="web", port=8080))
        return self


@pytest.fixture
def layout(tmp_path) -> Layout:
    layout = Layout(root=str(tmp_path), netns="netns1")
    layout.ensure_ns_dir()
    os.mkdir(layout.group_dir("web"))
    return layout


@pytest.fixture
def clock(monkeypatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(drain, "time", clock)
    return clock


@pytest.fixture
def script(monkeypatch, layout) -> Script:
    return Script(monkeypatch, layout)


# Done ---------------------------------------------------------------------------------------------


def test_drained_once_the_queue_is_empty(layout, clock, script):
    script.then(queue=3).then(queue=1).then(queue=0)
    got = drain.wait_drained("w1", timeout=10, layout=layout, interval=0.5)
    assert (got.name, got.state, got.queue) == ("w1", DRAINED, 0)
    assert script.reads == 3 and clock.sleeps == [0.5, 0.5]
    assert (script.opened, script.closed) == (["web"], 1)  # the only group here, opened once, closed


def test_an_unknown_queue_is_not_an_empty_one(layout, clock, script):
    script.then(queue=None).then(queue=0)
    assert drain.wait_drained("w1", timeout=10, layout=layout).state == DRAINED
    assert script.reads == 2


def test_a_udp_member_is_drained_when_its_live_flows_have_ended_too(layout, clock, monkeypatch):
    script = Script(monkeypatch, layout, proto=abi.RP_PROTO_UDP)
    script.then(queue=0, flows=2).then(queue=0, flows=1).then(queue=0, flows=0)
    got = drain.wait_drained("w1", timeout=10, group="web", layout=layout, interval=1)
    assert (got.state, got.flows) == (DRAINED, 0)
    assert clock.sleeps == [1, 1]


def test_without_a_flow_table_an_empty_queue_is_enough(layout, clock, script):
    script.then(queue=0, flows=None)
    assert drain.wait_drained("w1", timeout=10, layout=layout).state == DRAINED
    assert clock.sleeps == []


def test_a_member_whose_socket_is_gone_is_done_waiting(layout, clock, script):
    script.then(queue=5).then(queue=5, gone=True)
    got = drain.wait_drained("w1", timeout=10, layout=layout, interval=0.25)
    assert got.state == GONE
    assert clock.sleeps == [0.25]


# Timeout ------------------------------------------------------------------------------------------


def test_a_queue_that_never_empties_times_out_after_the_timeout(layout, clock, script):
    script.then(queue=3)
    with pytest.raises(WaitTimeout) as timed_out:
        drain.wait_drained("w1", timeout=1, layout=layout, interval=0.25)
    assert str(timed_out.value) == "drain w1: still 3 queued after 1s; it takes no new connection"
    assert clock.now - clock.start == 1.0 and clock.sleeps == [0.25] * 4
    assert script.closed == 1


def test_the_timeout_counts_live_flows_too(layout, clock, script):
    script.then(queue=0, flows=5)
    with pytest.raises(WaitTimeout, match=r"^drain w1: still 0 queued and 5 live flows after 2\.5s; "):
        drain.wait_drained("w1", timeout=2.5, layout=layout, interval=1)
    assert clock.now - clock.start == 3  # the read at 3 s is the first past the deadline


def test_a_zero_timeout_reads_once(layout, clock, script):
    script.then(queue=0)
    assert drain.wait_drained("w1", timeout=0, layout=layout).state == DRAINED
    script.views.clear()
    script.then(queue=1)
    with pytest.raises(WaitTimeout, match="still 1 queued after 0s"):
        drain.wait_drained("w1", timeout=0, layout=layout)
    assert clock.sleeps == []


# Progress ------------------------------------------------------------------------------------------


def test_progress_is_told_each_change_with_the_ports_handshakes(layout, clock, script):
    script.then(queue=3).then(queue=3).then(queue=None).then(queue=2).then(queue=0)
    told = []
    drain.wait_drained("w1", timeout=10, layout=layout, progress=lambda *a: told.append(a))
    assert told == [(3, 1, None), (0, 1, None), (2, 1, None)]  # an unknown queue is told as 0
    assert script.handshake_ports == [8080] * 4  # every read but the drained one


def test_progress_of_handshakes_that_cannot_be_read_is_none(layout, clock, script):
    script.handshakes = OSError(1, "sock_diag: not permitted")
    script.then(queue=3).then(queue=0)
    told = []
    drain.wait_drained("w1", timeout=10, layout=layout, progress=lambda *a: told.append(a))
    assert told == [(3, None, None)]


def test_progress_of_a_udp_member_tells_flows_and_no_handshakes(layout, clock, monkeypatch):
    script = Script(monkeypatch, layout, proto=abi.RP_PROTO_UDP)
    script.then(queue=10, flows=4).then(queue=0, flows=4).then(queue=0, flows=0)
    told = []
    drain.wait_drained("w1", timeout=10, layout=layout, progress=lambda *a: told.append(a))
    assert told == [(10, None, 4), (0, None, 4)]
    assert script.handshake_ports == []


def test_without_progress_no_handshakes_are_read(layout, clock, script):
    script.then(queue=3).then(queue=0)
    drain.wait_drained("w1", timeout=10, layout=layout)
    assert script.handshake_ports == []


# What is refused ------------------------------------------------------------------------------------


def test_a_member_not_draining_is_refused_with_what_to_do(layout, clock, script):
    script.then(draining=False, queue=0)
    with pytest.raises(InvalidInput) as refused:
        drain.wait_drained("w1", timeout=10, layout=layout)
    assert str(refused.value) == "wait for w1: it is not draining (run `set_draining(w1, True)` first)"
    assert clock.sleeps == []


def test_a_member_that_stops_draining_while_waited_for_is_refused(layout, clock, script):
    script.then(queue=3).then(draining=False, queue=3)
    with pytest.raises(InvalidInput, match="it is not draining"):
        drain.wait_drained("w1", timeout=10, layout=layout)
    assert script.reads == 2


def test_an_unknown_member_is_not_found(layout, clock, script):
    script.then(queue=0)
    with pytest.raises(NotFound, match="no member 'w9' in group 'web'"):
        drain.wait_drained("w9", timeout=10, layout=layout)


def test_the_group_is_resolved_before_it_is_opened(layout, clock, script):
    script.then(queue=0)
    with pytest.raises(NotFound, match="no group 'api' in this network namespace"):
        drain.wait_drained("w1", timeout=10, group="api", layout=layout)
    with pytest.raises(InvalidInput, match="group name 'a.b'"):
        drain.wait_drained("w1", timeout=10, group="a.b", layout=layout)
    os.mkdir(layout.group_dir("api"))
    with pytest.raises(UsageError, match=r"several groups here \(api, web\)"):
        drain.wait_drained("w1", timeout=10, layout=layout)
    assert script.opened == [] and script.reads == 0
    assert drain.wait_drained("w1", timeout=10, group="api", layout=layout).state == DRAINED
    assert script.opened == ["api"]


# A server generation (wait_generation_drained) ---------------------------------------------------


def _generation_view(*queues, draining=True, flows=None):
    from rpctl.controller.read.generation_views import generation_views

    members = [member(i, f"a-{i + 1}", generation=1, draining=draining, queue=q, flows=flows)
               for i, q in enumerate(queues)] + [member(9, "b-1", generation=2)]
    view = group_view(members, name="web", port=8080)
    view.generations = generation_views(view.members)
    return view


def test_a_generation_is_drained_once_every_member_of_it_is(layout, clock, script):
    script.views += [_generation_view(2, 1), _generation_view(0, 1), _generation_view(0, 0)]
    told = []
    gen = drain.wait_generation_drained(1, 10, group="web", layout=layout, progress=lambda q, f: told.append((q, f)))
    assert (gen.number, str(gen.state), gen.members) == (1, "drained", ("a-1", "a-2"))
    assert told == [(3, None), (1, None)] and script.reads == 3


def test_waiting_for_a_generation_that_serves_or_is_not_there_is_refused(layout, clock, script):
    script.views.append(_generation_view(0, draining=False))
    with pytest.raises(InvalidInput, match="it is serving, not draining"):
        drain.wait_generation_drained(1, 10, group="web", layout=layout)
    with pytest.raises(NotFound, match=r"has no such generation \(it has: 1, 2\)"):
        drain.wait_generation_drained(3, 10, group="web", layout=layout)


def test_a_generation_that_never_drains_times_out(layout, clock, script):
    script.views.append(_generation_view(4, flows=2))
    with pytest.raises(WaitTimeout, match="generation 1 of web: still 4 queued after 1s"):
        drain.wait_generation_drained(1, 1, group="web", layout=layout)
