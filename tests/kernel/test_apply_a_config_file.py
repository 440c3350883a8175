"""`rpctl apply` and controller/ops/reconcile.py against a real nginx and real sockets, each test in its own netns.

nginx (`listen ... reuseport`, N workers) opens N listeners in its master;
a reload keeps them (new worker processes, same sockets), opens one more
for N+1 workers and closes one for N-1.  apply adopts the listeners whose
serving process matches the group's rule under stable names, follows the
reloads, and changes nothing when nothing changed (ctl.gen stays).
"""

from __future__ import annotations

import json
import os
import time

import pytest
from rpctl.cli.demo import loadgen
from rpctl.cli.demo import worker as demo_worker
from rpctl.controller.ops import config, reconcile
from rpctl.controller.store.group import Group
from rpctl.controller.store.state import Layout

from tests.support.pinned import pinned_bytes

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


def test_reconcile_adopts_nginx_follows_reloads_and_changes_nothing_twice(netns, nginx):
    ngx = nginx(port=PORT, workers=3)
    spec = config.loads(WEB, "rpctl.toml").group("web")

    p = reconcile.reconcile(spec)
    assert p.create and [a.name for a in p.adds] == ["nginx-1", "nginx-2", "nginx-3"], p.lines()
    gen = _gen()
    started = time.monotonic()
    again = reconcile.reconcile(spec)
    print(f"reconcile with nothing to do (3 listeners): {(time.monotonic() - started) * 1000:.1f} ms")
    assert again.empty and again.lines() == ["group web: up to date"]
    assert _gen() == gen, "a reconcile with nothing to do must not publish"

    tally = loadgen.run_tcp("127.0.0.1", PORT, count=600, concurrency=6)
    assert sum(tally.failures.values()) == 0 and set(tally.by_name) == {str(p) for p in ngx.worker_pids}

    ngx.reload(4)
    # What `rpctl serve` may do: observe, plan and execute apart.
    p = reconcile.plan(spec, reconcile.observe(spec))
    assert [a.name for a in p.adds] == ["nginx-4"], p.lines()
    assert sorted(reconcile.execute(p)) == ["nginx-1", "nginx-2", "nginx-3", "nginx-4"]
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
    proc, _ready = demo_worker.spawn("intruder", f"127.0.0.1:{PORT}")
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


def _write(tmp_path, text: str) -> str:
    path = tmp_path / "rpctl.toml"
    path.write_text(text)
    return str(path)


def test_apply_twice_changes_nothing_the_second_time_and_dry_run_changes_nothing(netns, nginx, rpctl, tmp_path):
    ngx = nginx(port=PORT, workers=3)
    path = _write(tmp_path, WEB + 'weights = { "nginx-1" = 3 }\ndrain = ["nginx-3"]\n')

    out = rpctl.ok("apply", "-c", path, "--dry-run")
    assert out.splitlines()[:2] == ["group web: create it for tcp:127.0.0.1:7180",
                                    f"group web: + nginx-1 ({_server(1)}, weight 3)"], out
    assert Layout().groups() == [], "--dry-run created the group"

    out = rpctl.ok("apply", "-c", path)
    print(out)
    assert f"group web: + nginx-3 ({_server(3)}, weight 1, drained)" in out.splitlines()
    members = _members(rpctl)
    assert {n: (m["weight"], m["state"]) for n, m in members.items()} == {
        "nginx-1": (3, "active"), "nginx-2": (1, "active"), "nginx-3": (1, "drained")}
    gen, before = _gen(), pinned_bytes()
    assert rpctl.ok("apply", "-c", path) == "group web: up to date\n"
    assert _gen() == gen and pinned_bytes() == before, "the second apply published"

    ngx.reload(4)
    before = pinned_bytes()
    out = rpctl.ok("apply", "-c", path, "--dry-run")
    assert f"group web: + nginx-4 ({_server(4)}, weight 1)" in out.splitlines(), out
    assert pinned_bytes() == before, "--dry-run changed the pinned state"
    doc = json.loads(rpctl.ok("apply", "-c", path, "--json"))
    (plan,) = doc["groups"]
    assert [a["name"] for a in plan["added"]] == ["nginx-4"] and len(plan["refreshed"]) == 3
    assert _gen() != gen
    members = _members(rpctl)
    assert {m["pid"] for m in members.values()} == ngx.worker_pids
    tally = loadgen.run_tcp("127.0.0.1", PORT, count=1200, concurrency=8)
    assert sum(tally.failures.values()) == 0
    by_member = {n: tally.by_name[str(m["pid"])] for n, m in members.items()}
    print("replies by member after the reload to 4:", by_member)
    assert by_member["nginx-3"] == 0 and min(by_member["nginx-1"], by_member["nginx-2"], by_member["nginx-4"]) > 0
    assert by_member["nginx-1"] > by_member["nginx-2"] and by_member["nginx-1"] > by_member["nginx-4"]

    ngx.reload(4)  # same count: same sockets, new processes, same names
    names_before = {n: m["cookie"] for n, m in _members(rpctl).items()}
    out = rpctl.ok("apply", "-c", path)
    assert out.count("(same socket") == 4 and "+" not in out and " - " not in out, out
    assert {n: m["cookie"] for n, m in _members(rpctl).items()} == names_before

    ngx.reload(2)
    out = rpctl.ok("apply", "-c", path)
    assert sorted(line for line in out.splitlines() if " - " in line) == [
        "group web: - nginx-3 (socket closed)", "group web: - nginx-4 (socket closed)"], out
    assert set(_members(rpctl)) == {"nginx-1", "nginx-2"}


def _server(i: int) -> str:
    """"pid P nginx fd F" of the i-th listener discover lists on PORT (servers by pid): the one named nginx-i."""
    from rpctl.controller.kernel import discover

    (ep,) = discover.discover(PORT, "tcp", probe_reuseport=False)
    s = ep.listeners[i - 1].server
    return f"pid {s.pid} nginx fd {s.fd}"


BAD_FILES = {
    "unknown key": (WEB + "affinity = true\n", ":5: group 'web': key 'affinity': unknown key"),
    "UDP key on tcp": (WEB + "quic = true\n", ":5: group 'web': key 'quic': for UDP groups only"),
    "wrong type": (WEB + 'weight = "3"\n', ":5: group 'web': key 'weight': weight of every member: '3' is not"),
    "duplicate name": (WEB + WEB.replace(str(PORT), str(PORT + 1)), ":6: group 'web': key 'name': a second group"),
    "duplicate listen": (WEB + WEB.replace('"web"', '"api"'), ":7: group 'api': key 'listen': tcp:127.0.0.1:7180 is"),
    "bad listen": (WEB.replace(f"tcp:127.0.0.1:{PORT}", f"tcp:127.0.0.1:{PORT}0"), ":3: group 'web': key 'listen'"),
    "weight out of range": (WEB + 'weights = { "nginx-1" = 10001 }\n', ":5: group 'web': key 'weights.nginx-1'"),
    "bad pin": (WEB + 'pin = "rss"\n', ":5: group 'web': key 'pin': 'rss': use"),
    "syntax": (WEB + "weights = {\n", ":5: not valid TOML: "),
}


def test_every_config_error_leaves_the_pinned_state_byte_for_byte(netns, nginx, rpctl, tmp_path):
    ngx = nginx(port=PORT, workers=3)
    rpctl.ok("apply", "-c", _write(tmp_path, WEB))
    ngx.reload(4)  # something an apply would change, were the file good
    before = pinned_bytes()
    for what, (text, error) in BAD_FILES.items():
        path = _write(tmp_path, text)
        code, out, err = rpctl("apply", "-c", path)
        assert code == 4, f"{what}: exit {code}: {err}"
        (line,) = err.splitlines()
        assert line.startswith(f"rpctl: {path}{error}"), f"{what}: {line}"
        assert out == ""
        assert pinned_bytes() == before, f"{what} changed the pinned state"
    code, out, err = rpctl("apply", "-c", str(tmp_path / "nope.toml"))
    assert (code, err) == (3, f"rpctl: config file {tmp_path / 'nope.toml'}: no such file\n")


def test_a_refused_pin_leaves_the_new_listener_out_and_the_state_as_it_was(netns, nginx, rpctl, tmp_path):
    """pin cpu needs a member per CPU; nginx's workers may run on every CPU, so the
    plan (add nginx-4, pin cpu) is refused as a whole before the publish."""
    ngx = nginx(port=PORT, workers=3)
    rpctl.ok("apply", "-c", _write(tmp_path, WEB))
    ngx.reload(4)
    before = pinned_bytes()
    code, _out, err = rpctl("apply", "-c", _write(tmp_path, WEB + 'pin = "cpu"\n'))
    assert code == 4 and "pin cpu" in err and len(err.splitlines()) == 1, err
    assert pinned_bytes() == before
    assert set(_members(rpctl)) == {"nginx-1", "nginx-2", "nginx-3"}


def test_prune_unloads_groups_the_file_does_not_name(netns, nginx, rpctl, tmp_path, make_members):
    nginx(port=PORT, workers=2)
    other = make_members(port=PORT + 1)
    for _ in range(2):
        other.add()
    other.register_all(prefix="w")
    (extra,) = Layout().groups()
    path = _write(tmp_path, WEB)
    out = rpctl.ok("apply", "-c", path)
    assert f"group {extra}: not in {path}, left alone (--prune unloads it)" in out.splitlines(), out
    out = rpctl.ok("apply", "-c", path, "--prune", "--dry-run")
    assert f"group {extra}: would be unloaded (not in {path})" in out.splitlines()
    assert sorted(Layout().groups()) == sorted([extra, "web"])
    out = rpctl.ok("apply", "-c", path, "--prune")
    assert out.splitlines() == ["group web: up to date", f"group {extra}: unloaded (not in {path})"]
    assert Layout().groups() == ["web"]


def test_after_a_server_restart_apply_adopts_the_new_sockets_and_attaches_the_program(netns, nginx, rpctl, tmp_path):
    """A restart (as `systemctl restart nginx`) closes every listener and opens new ones: a new
    reuseport group that has no program.  apply removes the old members, adds the new listeners
    under the freed names and attaches the program again: the file's drain holds at once."""
    path = _write(tmp_path, WEB + 'drain = ["nginx-1"]\n')
    first = nginx(port=PORT, workers=2)
    rpctl.ok("apply", "-c", path)
    first.stop()
    second = nginx(port=PORT, workers=2)
    out = rpctl.ok("apply", "-c", path)
    print(out)
    lines = out.splitlines()
    assert sorted(line for line in lines if " - " in line) == [
        "group web: - nginx-1 (socket closed)", "group web: - nginx-2 (socket closed)"], out
    assert [line.split(" (")[0] for line in lines if " + " in line] == ["group web: + nginx-1", "group web: + nginx-2"]
    members = _members(rpctl)
    assert members["nginx-1"]["state"] in ("drained", "draining") and {m["pid"] for m in members.values()} == (
        second.worker_pids)
    tally = loadgen.run_tcp("127.0.0.1", PORT, count=400, concurrency=4)
    assert sum(tally.failures.values()) == 0
    assert tally.by_name[str(members["nginx-1"]["pid"])] == 0, f"the program is not attached: {dict(tally.by_name)}"
    assert rpctl.ok("apply", "-c", path) == "group web: up to date\n"


def test_an_apply_killed_before_its_flip_disturbs_nothing_and_the_next_converges(netns, nginx, rpctl, tmp_path):
    """Killed after it put the new listener into the socket array, before the flip: the live
    generation is untouched (the new worker gets nothing, nobody fails), and the next apply
    adds it (the socket the dead writer left in the array is cleared first, else EBUSY)."""
    path = _write(tmp_path, WEB)
    ngx = nginx(port=PORT, workers=3)
    rpctl.ok("apply", "-c", path)
    ngx.reload(4)
    gen = _gen()
    writer = rpctl.subprocess("apply", "-c", path, env={**os.environ, "RPCTL_FAILPOINT": "before-flip:exit"})
    out, err = writer.communicate(timeout=60)
    assert writer.returncode == -9 and "failpoint before-flip reached" in err, (writer.returncode, out, err)
    assert _gen() == gen, "the killed apply flipped"
    members = _members(rpctl)
    assert set(members) == {"nginx-1", "nginx-2", "nginx-3"}
    tally = loadgen.run_tcp("127.0.0.1", PORT, count=400, concurrency=4)
    assert sum(tally.failures.values()) == 0
    assert set(tally.by_name) <= {str(m["pid"]) for m in members.values()}, dict(tally.by_name)
    out = rpctl.ok("apply", "-c", path)
    assert [line.split(" (")[0] for line in out.splitlines() if " + " in line] == ["group web: + nginx-4"], out
    tally = loadgen.run_tcp("127.0.0.1", PORT, count=800, concurrency=8)
    assert sum(tally.failures.values()) == 0 and set(tally.by_name) == {str(p) for p in ngx.worker_pids}


def test_udp_on_ipv6_workers_matched_by_executable(netns, rpctl, tmp_path):
    """A UDP group on [::1], its workers (demo workers, one socket each) matched by exe and uid."""
    from rpctl.controller.kernel import discover

    procs = [demo_worker.spawn(f"u{i}", f"[::1]:{PORT}", proto="udp")[0] for i in range(2)]
    try:
        exe = discover.identity(procs[0].pid).exe
        path = _write(tmp_path, f'[[group]]\nname = "dns"\nlisten = "udp:[::1]:{PORT}"\n'
                                f'adopt = {{ exe = "{exe}", uid = "root" }}\n'
                                'names = "u-{i}"\nweights = { "u-2" = 0 }\n')
        out = rpctl.ok("apply", "-c", path)
        assert [line.split(" (")[0] for line in out.splitlines()] == [
            "group dns: create it for udp:[::1]:7180", "group dns: + u-1", "group dns: + u-2"], out
        tally = loadgen.run_udp("::1", PORT, count=200)
        assert tally.total_ok() >= 190 and set(tally.by_name) == {"u0"}, dict(tally.by_name)
        assert rpctl.ok("apply", "-c", path) == "group dns: up to date\n"
    finally:
        for proc in procs:
            demo_worker.stop(proc, timeout=1)


def test_pin_cpu_from_the_file_follows_a_reload(netns, nginx, rpctl, tmp_path):
    """nginx with `worker_cpu_affinity auto` runs worker i on CPU i: `pin = "cpu"` sends what
    arrives on a CPU to its worker, and after a reload (new processes) the assignment is
    computed again from the new workers in the same publish."""
    from rpctl.controller.ops.pin import online_cpus

    from tests.support.traffic import on_cpu

    assert {0, 1} <= online_cpus(), "this test drives CPUs 0 and 1"
    ngx = nginx(port=PORT, workers=2, cpu_affinity=True)
    path = _write(tmp_path, WEB + 'pin = "cpu"\n')
    out = rpctl.ok("apply", "-c", path)
    assert out.splitlines()[-1] == "group web: pin cpu (was weighted)", out

    def worker_of(cpu: int) -> str:
        (pid,) = [p for p in ngx.worker_pids if os.sched_getaffinity(p) == {cpu}]
        return str(pid)

    for round_ in ("first", "after reload"):
        (view,) = json.loads(rpctl.ok("status", "--json"))["groups"]
        assert view["mode"] == "cpu", view
        for cpu in (0, 1):
            with on_cpu(cpu):
                tally = loadgen.run_tcp("127.0.0.1", PORT, count=200, concurrency=2)
            assert sum(tally.failures.values()) == 0
            assert dict(tally.by_name) == {worker_of(cpu): 200}, (round_, cpu, dict(tally.by_name))
        if round_ == "first":
            ngx.reload(2)
            out = rpctl.ok("apply", "-c", path)
            assert out.count("(same socket") == 2 and out.splitlines()[-1] == "group web: pin cpu (members changed)"
    assert rpctl.ok("apply", "-c", path) == "group web: up to date\n"


def test_udp_creation_options_from_the_file_and_a_differing_one_refused(netns, rpctl, tmp_path):
    """flow_affinity = false: a group without a flow table; flow_table_size = 1024: one of
    that size; a file whose size differs from the live group's is refused (exit 7, one line
    naming the option and both values) and changes nothing."""
    from rpctl.controller.kernel import discover

    procs = [demo_worker.spawn(f"u{i}", f"127.0.0.1:{PORT}", proto="udp")[0] for i in range(2)]
    try:
        exe = discover.identity(procs[0].pid).exe
        dns = (f'[[group]]\nname = "dns"\nlisten = "udp:127.0.0.1:{PORT}"\n'
               f'adopt = {{ exe = "{exe}" }}\nnames = "u-{{i}}"\n')

        def flow_table():
            (view,) = json.loads(rpctl.ok("status", "--group", "dns", "--json"))["groups"]
            return view["flow_table"]

        rpctl.ok("apply", "-c", _write(tmp_path, dns + "flow_affinity = false\n"))
        assert flow_table() is None
        rpctl.ok("unload", "--group", "dns")

        path = _write(tmp_path, dns + "flow_table_size = 1024\n")
        out = rpctl.ok("apply", "-c", path)
        assert "group dns: create it for udp:127.0.0.1:7180 with flow_table_size 1024\n" in out, out
        assert flow_table()["size"] == 1024
        assert rpctl.ok("apply", "-c", path) == "group dns: up to date\n"

        before = pinned_bytes()
        # A second group after the refused one is still made what the file says.
        procs.append(demo_worker.spawn("v0", f"127.0.0.1:{PORT + 1}", proto="udp")[0])
        other = (f'[[group]]\nname = "dns2"\nlisten = "udp:127.0.0.1:{PORT + 1}"\n'
                 f'adopt = {{ exe = "{exe}" }}\nnames = "v-{{i}}"\n')
        code, out, err = rpctl("apply", "-c", _write(tmp_path, dns + "flow_table_size = 2048\n" + other))
        assert code == 7, (code, out, err)
        assert err == ("rpctl: group dns: flow_table_size is 1024 in the kernel and 2048 in the file; a group's "
                       "creation options are fixed (`rpctl unload --group dns` first, then apply again to make it "
                       "anew), the group is left as it is\n"), err
        assert out.startswith(f"group dns2: create it for udp:127.0.0.1:{PORT + 1}"), out
        after = pinned_bytes()
        assert {k: v for k, v in after.items() if not k.startswith("dns2/")} == before
        assert flow_table()["size"] == 1024
    finally:
        for proc in procs:
            demo_worker.stop(proc, timeout=1)
