"""Take over a group an rpctl of another state version made (as after a package upgrade):
it steers on, nothing of it can be read or changed (exit 7, saying what to do), and
`rpctl unload --force` detaches its program, so that its sockets can join a group anew.

The other version's state is this version's with another number in ctl.abi_version:
what rpctl meets when the layout changed is the same refusal, and the head of rp_ctl
(the endpoint) is laid out alike in every version (tests/unit/test_foreign_state.py).
"""

from __future__ import annotations

import pytest
from rpctl.cli.demo import loadgen
from rpctl.cli.demo import worker as demo_worker
from rpctl.controller.contract import abi
from rpctl.controller.store.generation import Group
from rpctl.controller.store.state import Layout

from tests.support.traffic import PORT

pytestmark = pytest.mark.kernel


@pytest.fixture
def two_workers(netns, rpctl):
    started = [demo_worker.spawn(name, f"127.0.0.1:{PORT}") for name in ("w1", "w2")]
    for name, (_, ready) in zip(("w1", "w2"), started):
        rpctl.ok("register", name, "--pid", ready.pid, "--fd", ready.fd, "--group", "web")
    yield started
    for proc, _ in started:
        demo_worker.stop(proc, timeout=1)


def _who_answers(count: int = 40) -> set[str]:
    tally = loadgen.run_tcp("127.0.0.1", PORT, count=count, concurrency=4)
    assert not tally.failures, tally
    return set(tally.by_name)


def _made_by_another_version(group: str) -> None:
    with Group.open(group, Layout()) as g:
        ctl = g.ctl()
        ctl.abi_version = abi.RP_ABI_VERSION + 1
        g.maps["ctl"].put(0, ctl)


def test_a_group_of_another_version_steers_on_and_unload_force_frees_its_sockets(two_workers, rpctl):
    rpctl.ok("weights", "w1=0", "--group", "web")  # w2 takes every connection
    _made_by_another_version("web")

    code, _, err = rpctl("status")
    assert code == 7 and "state version" in err and "rpctl unload --group web --force" in err, err
    assert rpctl("weights", "w1=1", "--group", "web")[0] == 7
    assert rpctl("unload", "--group", "web")[0] == 7
    # Its program still steers with the tables it had.
    assert _who_answers() == {"w2"}

    out = rpctl.ok("unload", "--group", "web", "--force")
    assert out.startswith("detached the program and removed group web"), out
    # Its sockets are free: they join a group of this version.
    for name, (_, ready) in zip(("w1", "w2"), two_workers):
        rpctl.ok("register", name, "--pid", ready.pid, "--fd", ready.fd, "--group", "web")
    rpctl.ok("drain", "w2", "--group", "web")
    assert _who_answers() == {"w1"}
