"""`rpctl apply` and controller/reconcile.py against a real nginx and real sockets, each test in its own netns.

nginx (`listen ... reuseport`, N workers) opens N listeners in its master;
a reload keeps them (new worker processes, same sockets), opens one more
for N+1 workers and closes one for N-1.  apply adopts the listeners whose
serving process matches the group's rule under stable names, follows the
reloads, and changes nothing when nothing changed (ctl.gen stays).
"""

from __future__ import annotations

import json

import pytest
from rpctl.cli.demo import loadgen
from rpctl.cli.demo import worker as demo_worker
from rpctl.controller import config, reconcile
from rpctl.controller.group import Group
from rpctl.controller.state import Layout

pytestmark = pytest.mark.kernel

PORT = 7180
WEB = f"""\
[[group]]
name = "web"
listen = "tcp:127.0.0.1:{PORT}"
adopt = {{ comm = "nginx" }}
"""


def _gen(name: str = "web") -> int:
    with Group.open(name, Layout()) as g:
        return g.ctl().gen


def _members(rpctl, group: str = "web") -> dict[str, dict]:
    (view,) = json.loads(rpctl.ok("status", "--group", group, "--json"))["groups"]
    return {m["name"]: m for m in view["members"]}


def _pinned_bytes() -> dict[str, bytes]:
    """Every element of every pinned map of every group of this namespace, byte for byte, and the program's id."""
    import ctypes

    from rpctl.controller import abi, bpfsys

    layout = Layout()
    out = {}
    for name in layout.groups():
        with Group.open(name, layout) as g:
            for spec in abi.GROUP_MAPS:
                m, raw = g.maps[spec.name], ctypes.c_char * spec.value_size
                for k in range(spec.max_entries):
                    if spec.map_type == bpfsys.MAP_TYPE_PERCPU_ARRAY:
                        value = b"".join(bytes(v) for v in m.read_percpu(k, raw))
                    else:
                        got = m.get(k, raw)
                        value = b"-" if got is None else bytes(got)
                    out[f"{name}/{spec.name}[{k}]"] = value
            out[f"{name}/prog"] = str(g.prog_id()).encode()
    return out


def test_reconcile_adopts_nginx_follows_reloads_and_changes_nothing_twice(netns, nginx):
    ngx = nginx(port=PORT, workers=3)
    spec = config.loads(WEB, "rpctl.toml").group("web")

    p = reconcile.reconcile(spec)
    assert p.create and [a.name for a in p.adds] == ["nginx-1", "nginx-2", "nginx-3"], p.lines()
    gen = _gen()
    again = reconcile.reconcile(spec)
    assert again.empty and again.lines() == ["group web: up to date"]
    assert _gen() == gen, "a reconcile with nothing to do must not publish"

    tally = loadgen.run_tcp("127.0.0.1", PORT, count=600, concurrency=6)
    assert sum(tally.failures.values()) == 0 and set(tally.by_name) == {str(p) for p in ngx.worker_pids}

    ngx.reload(4)
    p = reconcile.reconcile(spec)
    assert [a.name for a in p.adds] == ["nginx-4"], p.lines()
    assert len(p.refreshes) == 3 and not p.removes, p.lines()
    view = reconcile.observe(spec)
    assert {m.name for m in view.members} == {"nginx-1", "nginx-2", "nginx-3", "nginx-4"}
    assert {m.pid for m in view.members} == ngx.worker_pids, "pids follow the reload"
    tally = loadgen.run_tcp("127.0.0.1", PORT, count=800, concurrency=8)
    assert sum(tally.failures.values()) == 0
    assert set(tally.by_name) == {str(p) for p in ngx.worker_pids}, f"every worker gets its share: {tally.by_name}"
    gen = _gen()
    assert reconcile.reconcile(spec).empty and _gen() == gen


def test_a_listener_of_another_process_is_not_admitted(netns, nginx):
    ngx = nginx(port=PORT, workers=2)
    proc, ready = demo_worker.spawn("intruder", f"127.0.0.1:{PORT}")
    try:
        spec = config.loads(WEB, "rpctl.toml").group("web")
        p = reconcile.reconcile(spec)
        assert [a.name for a in p.adds] == ["nginx-1", "nginx-2"], p.lines()
        (u,) = p.unmanaged
        assert u.pid == proc.pid and "is not 'nginx'" in u.reason, p.lines()
        tally = loadgen.run_tcp("127.0.0.1", PORT, count=400, concurrency=4)
        assert sum(tally.failures.values()) == 0
        assert set(tally.by_name) == {str(p) for p in ngx.worker_pids}, dict(tally.by_name)
    finally:
        demo_worker.stop(proc, timeout=1)
