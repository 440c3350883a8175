"""controller/ops/adopt.py: plan and pick_endpoint on hand-made endpoints; adopt's checks before it reads anything."""

from __future__ import annotations

import pytest
from rpctl.controller.contract.errors import InvalidInput, NotFound, PermissionDenied, UsageError
from rpctl.controller.kernel import discover, probe
from rpctl.controller.ops import adopt
from rpctl.controller.tables import naming

from tests.support.endpoints import endpoint, listener

# Plans -------------------------------------------------------------------------------------------


def test_plan_names_members_and_skips_those_already_in():
    ep = endpoint(
        listener(1, (10, 5), (11, 5), server=11, polled=(11,)), listener(2, (10, 6), (12, 6), server=12, polled=(12,))
    )
    todo, skipped = adopt.plan(ep, "{comm}-{pid}", {}, "tcp-8080")
    assert [(p.name, p.holder.pid, p.holder.fd) for p in todo] == [("srv-11", 11, 5), ("srv-12", 12, 6)]
    assert skipped == []
    todo, skipped = adopt.plan(ep, "w{i}", {2: ("web-b", 4)}, "tcp-8080")
    assert [p.name for p in todo] == ["w1"]
    assert [(r.name, r.status, r.index, r.pid, r.endpoint) for r in skipped] == [
        ("web-b", "already a member", 4, 12, "tcp:127.0.0.1:8080")
    ]


def test_plan_names_one_process_with_several_listeners_by_the_default_format():
    one_process = endpoint(
        listener(1, (10, 5), server=10), listener(2, (10, 6), server=10), listener(3, (10, 7), server=10)
    )
    todo, _ = adopt.plan(one_process, naming.DEFAULT_FORMAT, {}, "g")
    assert [p.name for p in todo] == ["srv-1", "srv-2", "srv-3"]
    # Numbers members have are taken: a listener that joins later gets the lowest free one.
    todo, skipped = adopt.plan(one_process, naming.DEFAULT_FORMAT, {1: ("srv-1", 0), 3: ("srv-3", 2)}, "g")
    assert [p.name for p in todo] == ["srv-2"] and [r.name for r in skipped] == ["srv-1", "srv-3"]


def test_plan_refuses_what_it_cannot_tell_apart():
    several = endpoint(listener(1, (10, 5), (11, 5), (12, 5), polled=(11, 12)))
    with pytest.raises(
        InvalidInput, match=r"pids 10,11,12 hold it and the epolls of pids 11,12 all watch it"
    ):
        adopt.plan(several, "{comm}-{pid}", {}, "g")
    nobody = endpoint(listener(1))
    with pytest.raises(InvalidInput, match="no process visible here holds socket cookie 1"):
        adopt.plan(nobody, "{comm}-{pid}", {}, "g")
    # ...unless the socket is a member already: then it is skipped.
    assert adopt.plan(several, "{comm}-{pid}", {1: ("x", 0)}, "g")[0] == []


def test_plan_refuses_colliding_names():
    one_process_two_sockets = endpoint(listener(1, (10, 5), server=10), listener(2, (10, 6), server=10))
    with pytest.raises(
        InvalidInput, match=r"'srv-10' would be given to pid 10 fd 5 and to pid 10 fd 6: add \{fd\}"
    ):
        adopt.plan(one_process_two_sockets, "{comm}-{pid}", {}, "g")
    assert [p.name for p in adopt.plan(one_process_two_sockets, "{comm}-{fd}", {}, "g")[0]] == [
        "srv-5",
        "srv-6",
    ]
    ep = endpoint(listener(1, (10, 5), server=10))
    with pytest.raises(InvalidInput, match="group 'g' already has a member 'srv-10'"):
        adopt.plan(ep, "{comm}-{pid}", {99: ("srv-10", 0)}, "g")
    # A member whose socket is gone still holds its name.
    with pytest.raises(InvalidInput, match="already has a member 'srv-10'"):
        adopt.plan(ep, "{comm}-{pid}", {}, "g", names_in_use={"srv-10": 99})


def test_pick_endpoint():
    tcp, udp = endpoint(proto="tcp"), endpoint(proto="udp")
    other = endpoint(addr="::1")
    assert adopt.pick_endpoint([tcp], 8080, None, None) is tcp
    with pytest.raises(NotFound, match="no TCP or UDP socket listens on port 8080"):
        adopt.pick_endpoint([], 8080, None, None)
    with pytest.raises(NotFound, match="no UDP socket listens on port 8080 on 10.0.0.1"):
        adopt.pick_endpoint([tcp], 8080, "udp", "10.0.0.1")
    with pytest.raises(
        UsageError, match=r"several endpoints use it \(tcp:127.0.0.1:8080, udp:127.0.0.1:8080\)"
    ):
        adopt.pick_endpoint([tcp, udp], 8080, None, None)
    assert adopt.pick_endpoint([tcp, other], 8080, None, "0:0::1") is other
    with pytest.raises(InvalidInput, match="not an IP address"):
        adopt.pick_endpoint([tcp], 8080, None, "localhost")


# adopt's checks that come before anything is read or changed ----------------------------------


@pytest.fixture
def nothing_read(monkeypatch):
    def refuse(*a, **kw):
        raise AssertionError("adopt went past its first checks")

    monkeypatch.setattr(discover, "discover", refuse)
    monkeypatch.setattr(discover.sockets, "take_socket", refuse)
    monkeypatch.setattr(adopt, "register_all", refuse)


def test_adopt_without_cap_sys_ptrace_is_refused_first(monkeypatch, nothing_read):
    monkeypatch.setattr(probe, "effective_caps", lambda: 0)
    with pytest.raises(PermissionDenied, match="adopt port 8080: .*CAP_SYS_PTRACE"):
        adopt.adopt(8080)


def test_adopt_refuses_bad_arguments_before_anything(nothing_read):
    with pytest.raises(InvalidInput, match="unknown field"):
        adopt.adopt(8080, name_format="{name}")
    with pytest.raises(InvalidInput, match="port 70000"):
        adopt.adopt(70000)
    with pytest.raises(InvalidInput, match="protocol"):
        adopt.adopt(8080, proto="sctp")
