"""controller/ops/serve.py: the loop treats every keeper alike, asking each what it needs (fds to wait
on, a time to wake up, a new spec taken in place or a new keeper), with the keepers replaced."""

from __future__ import annotations

import math
import selectors
import socket

import pytest
from rpctl.controller.ops import config, serve, watch

FILE = """\
[[group]]
name = "web"
listen = "tcp:127.0.0.1:8080"
adopt = { comm = "nginx" }

[[group]]
name = "api"
listen = "tcp:127.0.0.1:9090"
run = { command = ["/srv/api"], count = COUNT }
"""


class FakeKeeper:
    """A keeper that records what the loop asks of it; a run group's has an fd to wait on."""

    def __init__(self, spec, layout, fd=None):
        self.spec = spec
        self.fd = fd
        self.calls: list = []
        self.due = None
        self.until = math.inf  # when it needs a look whatever it sees

    @property
    def name(self):
        return self.spec.name

    @property
    def key(self):
        return self.spec.listen

    def can_take(self, spec):
        return spec.listen == self.spec.listen

    def take(self, spec):
        self.calls.append("take")
        self.spec = spec

    def has_children(self):
        return self.fd is not None

    def samples(self):
        return self.spec.adaptive

    def fds(self):
        return () if self.fd is None else (self.fd,)

    def next_due(self):
        return self.due

    def supervise(self):
        self.calls.append("supervise")

    def stop_now(self):
        self.calls.append("stop_now")

    def tick(self, now, look, force=False):
        self.calls.append(("tick", force))
        return force

    def waits(self):
        return watch.Wait(None, frozenset(), self.until)

    def adapt(self, now, look):
        self.calls.append(("adapt", look.ports))
        return None

    def close(self):
        self.calls.append("close")


@pytest.fixture
def looped(monkeypatch):
    """A Serve whose keepers are FakeKeepers; its selector and a run group's fd are real."""
    pair = socket.socketpair()
    made: dict[str, FakeKeeper] = {}

    def keeper_for(spec, layout):
        made[spec.name] = FakeKeeper(spec, layout, pair[0].fileno() if spec.run else None)
        return made[spec.name]

    monkeypatch.setattr(serve, "keeper_for", keeper_for)
    s = serve.Serve("rpctl.toml", layout=object())
    s._sel = selectors.DefaultSelector()
    s._next_cleanup = float("inf")  # no sweep of /proc here
    yield s, made
    s._sel.close()
    for sock in pair:
        sock.close()


def apply(s: serve.Serve, count: int, text: str = FILE) -> None:
    s._apply(config.loads(text.replace("COUNT", str(count)), "rpctl.toml"))


def test_the_loop_asks_every_keeper_the_same_and_only_what_it_has(looped):
    s, made = looped
    apply(s, 2)
    web, api = made["web"], made["api"]
    assert set(s.keepers) == {"web", "api"}
    assert [k.data for k in s._sel.get_map().values()] == [api], "only the run group's fd is waited on"
    assert api.calls == ["supervise", ("tick", True)]
    assert web.calls == [("tick", True)], "a group without children is not asked to supervise them"
    assert s._timeout() <= s.interval
    api.due = 0.0
    assert s._timeout() == 0.0
    # Stopped twice: the second time every keeper kills its children at once.
    s.stop()
    assert "stop_now" not in web.calls + api.calls
    s.stop()
    assert web.calls[-1] == api.calls[-1] == "stop_now"


def test_a_reread_takes_a_spec_in_place_or_makes_a_new_keeper(looped):
    s, made = looped
    apply(s, 2)
    web, api = made["web"], made["api"]
    apply(s, 3)
    assert s.keepers["api"] is api and "take" in api.calls and api.spec.run.count == 3
    # web moves to another port: a new keeper; api leaves the file: dropped, its fd no longer waited on.
    apply(s, 3, FILE.replace("8080", "8081").split("\n[[group]]\nname = \"api\"")[0])
    assert s.keepers["web"] is not web and web.calls[-1] == "close"
    assert "api" not in s.keepers and api.calls[-1] == "close" and not s._sel.get_map()


def test_a_look_that_finds_what_every_group_waits_for_asks_no_group(looped):
    s, made = looped
    apply(s, 2)
    web = made["web"]
    ticks = web.calls.count(("tick", True))
    s._next_look = 0.0
    s._tick()
    assert [c for c in web.calls if c[0] == "tick"] == [("tick", True)] * ticks, "nobody asked"
    assert made["api"].calls[-1] == "supervise", "children are still supervised at every wake-up"
    # A group whose periodic check is due: every group is looked at, and the quiet is taken again.
    web.until = 0.0
    s._tick(force=True)
    s._next_look = 0.0
    s._tick()
    assert web.calls[-1] == ("tick", False)


def test_a_sample_on_its_own_reads_the_ports_of_the_sampled_groups_alone(looped):
    s, made = looped
    apply(s, 2, FILE.replace('adopt = { comm = "nginx" }', 'adopt = { comm = "nginx" }\nadaptive = true'))
    web, api = made["web"], made["api"]
    assert web.calls[-1] == ("adapt", {8080}) and not [c for c in api.calls if c[0] == "adapt"]
