"""`rpctl serve` on the real kernel: groups from a file kept true to it while
nginx reloads, unmanaged listeners, a serve killed mid-publish, run groups,
SIGHUP with a broken file, sd_notify.

serve runs as a subprocess (`python -m rpctl.cli serve -c FILE`) as an
operator would run it, its stderr (one line per change) in a file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import sys
import textwrap
import time
import urllib.request

import pytest
from rpctl.cli.demo import worker as demo_worker
from rpctl.controller.contract.errors import RpctlError
from rpctl.controller.read import views

from tests.support.launched import Run, alive, members, wait_until
from tests.support.netns import drop_netns, namespace_with_a_group
from tests.support.nginx import Nginx, _children, group_config
from tests.support.traffic import ClientLoad

pytestmark = pytest.mark.kernel

PORT = 7310
SHARE_PP = 0.03          # the tolerance: within 3 percentage points
SHARE_SAMPLE = 6000      # connections counted for a share: sd of a 25 % share ~0.6 pp
JOIN_WITHIN = 2.0        # a reload's new listener gets its share within this


def adopt_config(path, extra: str = "") -> str:
    path.write_text(group_config(PORT) + extra)
    return str(path)


@pytest.fixture
def serve(launch):
    """Start `rpctl serve -c FILE ARGS` subprocesses (stopped after the test, as launch's)."""

    def start(config: str, *args: str, env: dict | None = None) -> Run:
        return launch([], [], argv=["serve", "-c", config, *args], env=env)

    return start


def live_members(group: str = "web") -> dict:
    view = views.read_view(group, with_queues=False)
    return {m.name: m for m in view.members if not m.gone}


def wait_members(names: set, ngx: Nginx | None = None, timeout: float = 10.0) -> dict:
    """Until the group's live members are `names` (and, with ngx, their pids nginx's current workers)."""

    def check():
        try:
            found = live_members()
        except RpctlError:  # not created yet
            return None
        if set(found) != names:
            return None
        if ngx is not None:
            workers = _children(ngx.master)
            if {m.pid for m in found.values()} - workers:
                return None
        return found

    return wait_until(f"members {sorted(names)}", check, timeout, interval=0.02)


def shares_since_publish(sample: int, timeout: float = 60.0) -> dict[str, float]:
    """Each member's share of the connections since the live table was published,
    once `sample` connections were counted."""

    def check():
        view = views.read_view("web", with_queues=False)
        if sum(m.since_publish for m in view.members) >= sample:
            return {m.name: m.observed_share for m in view.members}
        return None

    return wait_until(f"{sample} connections since the last publish", check, timeout, interval=0.1)


def nginx_names(n: int) -> set:
    return {f"nginx-{i}" for i in range(1, n + 1)}


def test_serve_follows_nginx_reloads_under_load(serve, nginx, tmp_path):
    ngx = nginx(port=PORT, workers=3)
    s = serve(adopt_config(tmp_path / "rpctl.toml"))
    first = wait_members(nginx_names(3), ngx)
    cookies = {name: m.cookie for name, m in first.items()}
    with ClientLoad(PORT, concurrency=4) as load:
        # One worker more: its new listener becomes nginx-4 and gets a quarter.
        t0 = time.monotonic()
        old = ngx.start_reload(4)
        found = wait_members(nginx_names(4), timeout=JOIN_WITHIN + 1)
        joined = time.monotonic() - t0
        assert joined <= JOIN_WITHIN, f"nginx-4 a member {joined:.2f}s after the reload"
        assert {n: found[n].cookie for n in cookies} == cookies, "a reload that keeps sockets keeps their names"
        ngx.wait_reloaded(old)
        wait_members(nginx_names(4), ngx)
        shares = shares_since_publish(SHARE_SAMPLE)
        print(f"4 workers: joined after {joined:.2f}s, shares {shares}")
        assert abs(shares["nginx-4"] - 0.25) <= SHARE_PP, shares

        # The same count: every worker replaced, every socket kept; names stay, pids follow.
        before = {n: m.pid for n, m in wait_members(nginx_names(4), ngx).items()}
        ngx.reload(4)
        after = wait_members(nginx_names(4), ngx)
        assert {n: m.cookie for n, m in after.items() if n in cookies} == cookies
        assert all(after[n].pid != pid for n, pid in before.items()), (before, after)

        # Down to two: two listeners close, their members are removed (not left
        # gone, which would skew the fallback), the rest is 50/50.
        t0 = time.monotonic()
        old = ngx.start_reload(2)

        def removed():
            view = views.read_view("web", with_queues=False)
            return len(view.members) == 2 and not any(m.gone for m in view.members)

        wait_until("the closed members removed", removed, JOIN_WITHIN)
        left = time.monotonic() - t0
        ngx.wait_reloaded(old)
        shares = shares_since_publish(SHARE_SAMPLE)
        print(f"2 workers: settled after {left:.2f}s, shares {shares}")
        assert all(abs(v - 0.5) <= SHARE_PP for v in shares.values()), shares
    tally = load.tally
    print(f"load: {tally.total_ok()} requests, failures {dict(tally.failures)}")
    assert tally.total_ok() > 2 * SHARE_SAMPLE
    assert sum(tally.failures.values()) == 0, dict(tally.failures)
    assert s.proc.poll() is None, s.stderr()
    err = s.stderr()
    assert "nginx-4" in err, err


def test_a_pin_the_workers_cannot_take_never_stops_serve_following_them(serve, nginx, tmp_path):
    # pin = "cpu" with one worker per CPU (worker_cpu_affinity auto) is a pin; a reload to
    # more workers than CPUs makes it ambiguous (two workers on one CPU).  serve still admits
    # the new listener and follows a restart, says why the pin stays as it was, and pins
    # again once the workers allow it.
    ncpu = len(os.sched_getaffinity(0))
    ngx = nginx(port=PORT, workers=ncpu, cpu_affinity=True)
    s = serve(adopt_config(tmp_path / "rpctl.toml", 'pin = "cpu"\n'))
    wait_members(nginx_names(ncpu), ngx)
    wait_until("pin cpu", lambda: views.read_view("web", with_queues=False).mode == "cpu")
    ngx.reload(ncpu + 1)
    wait_members(nginx_names(ncpu + 1), ngx)
    err = s.wait_logged("pin cpu not applied")
    assert "may both run on CPU" in err, err
    assert views.read_view("web", with_queues=False).mode == "cpu"   # as it was: the live pin stays
    ngx.stop()
    again = nginx(port=PORT, workers=ncpu + 1, cpu_affinity=True, name="again")
    wait_members(nginx_names(ncpu + 1), again)
    again.reload(ncpu)
    wait_members(nginx_names(ncpu), again)
    wait_until("pinned again", lambda: "group web: pin cpu" in s.stderr().rsplit("pin cpu not applied", 1)[1])
    assert s.proc.poll() is None, s.stderr()


def test_a_listener_of_another_process_is_never_admitted(serve, nginx, tmp_path):
    ngx = nginx(port=PORT, workers=2)
    s = serve(adopt_config(tmp_path / "rpctl.toml"), "--metrics", "127.0.0.1:0")
    wait_members(nginx_names(2), ngx)
    # --metrics: `rpctl metrics`' endpoint from the same process.
    url = re.search(r"metrics on (http://\S+)", s.wait_logged("metrics on http://")).group(1)
    with urllib.request.urlopen(url, timeout=5) as reply:
        scraped = reply.read().decode()
    assert 'rpctl_member_weight{group="web",member="nginx-2"} 1.0' in scraped, scraped[:2000]
    # A stranger (a Python demo worker, not nginx) joins the port with SO_REUSEPORT.
    proc, _ = demo_worker.spawn("intruder", f"127.0.0.1:{PORT}")
    try:
        err = s.wait_logged("not admitted", timeout=1.0)  # the issue: reported within 1 s
        assert f"pid {proc.pid}" in err, err
        with ClientLoad(PORT, concurrency=4) as load:
            time.sleep(2)
        tally = load.tally
        assert tally.total_ok() > 100 and sum(tally.failures.values()) == 0, tally.to_dict()
        assert "intruder" not in tally.by_name, dict(tally.by_name)
        assert set(live_members()) == nginx_names(2)
        assert s.stderr().count("not admitted") == 1, "reported once"
    finally:
        demo_worker.stop(proc, timeout=1)


def test_serve_killed_before_the_flip_changes_nothing_and_the_next_converges(serve, nginx, tmp_path):
    ngx = nginx(port=PORT, workers=3)
    config = adopt_config(tmp_path / "rpctl.toml")
    first = serve(config)
    wait_members(nginx_names(3), ngx)
    assert first.terminate() == 0
    before = views.read_view("web", with_queues=False)
    assert {m.name for m in before.members if not m.gone} == nginx_names(3), "SIGTERM leaves steering as it is"

    ngx.reload(4)            # a listener for serve to admit
    with ClientLoad(PORT, concurrency=4) as load:
        paused = serve(config, env={"RPCTL_FAILPOINT": "before-flip:pause"})
        paused.wait_logged("failpoint before-flip reached")
        paused.proc.kill()
        paused.proc.wait()
        after = views.read_view("web", with_queues=False)
        assert after.gen == before.gen and after.published_ns == before.published_ns
        assert [m.name for m in after.members] == [m.name for m in before.members]

        t0 = time.monotonic()
        serve(config)
        wait_members(nginx_names(4), ngx)
        print(f"the next serve converged in {time.monotonic() - t0:.2f}s")
    assert sum(load.tally.failures.values()) == 0, load.tally.to_dict()


WORKER = [sys.executable, "-m", "rpctl.cli.demo.worker", "--name", "$RPCTL_MEMBER"]


def run_config(path, count: int, weights: str = "") -> str:
    command = ", ".join(f'"{a}"' for a in WORKER)
    path.write_text(textwrap.dedent(f"""\
        [[group]]
        name = "web"
        listen = "tcp:127.0.0.1:{PORT}"
        run = {{ command = [{command}], count = {count} }}
        """) + weights)
    return str(path)


def test_run_groups_are_launched_restarted_and_survive_a_broken_file(serve, tmp_path, rpctl):
    notify_path = str(tmp_path / "notify")
    manager = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    manager.bind(notify_path)
    manager.settimeout(20)
    config = tmp_path / "rpctl.toml"
    s = serve(run_config(config, 2), env={"NOTIFY_SOCKET": notify_path})
    assert manager.recv(4096) == b"READY=1"
    names = {"worker-1", "worker-2"}
    found = wait_until("both workers ready", lambda: set(members(rpctl)) == names and
                       all(m["state"] == "active" for m in members(rpctl).values()) and members(rpctl))
    victim = found["worker-1"]["pid"]
    os.kill(victim, signal.SIGKILL)
    wait_until("worker-1 restarted", lambda: members(rpctl)["worker-1"]["pid"] not in (victim, 0)
               and members(rpctl)["worker-1"]["state"] == "active", timeout=10)
    assert "worker-1 (pid" in s.stderr()

    # A broken file: logged, the last good one stays (the workers keep running).
    pids = {n: m["pid"] for n, m in members(rpctl).items()}
    config.write_text("[[group]]\nname = 'web'\nlisten = 'tcp:127.0.0.1:nope'\n")
    mark = len(s.stderr())
    s.proc.send_signal(signal.SIGHUP)
    assert manager.recv(4096).startswith(b"RELOADING=1")
    assert manager.recv(4096) == b"READY=1"
    err = s.wait_logged("not reread", after=mark)
    assert "rpctl.toml:3" in err[mark:], err[mark:]
    time.sleep(0.5)
    assert {n: m["pid"] for n, m in members(rpctl).items()} == pids
    assert all(alive(p) for p in pids.values())

    # A weight and a pin the kernel's CPUs cannot give (the children may run
    # on every CPU): all or nothing, so the weight is not applied either.
    run_config(config, 2, 'weights = { "worker-2" = 3 }\npin = "cpu"\n')
    mark = len(s.stderr())
    s.proc.send_signal(signal.SIGHUP)
    assert manager.recv(4096).startswith(b"RELOADING=1")
    assert manager.recv(4096) == b"READY=1"
    s.wait_logged("nothing applied of its weights, drains and pin", after=mark)
    assert members(rpctl)["worker-2"]["weight"] == 1
    assert views.read_view("web", with_queues=False).mode == "weighted"

    # The weight alone: applied by name.
    run_config(config, 2, 'weights = { "worker-2" = 3 }\n')
    s.proc.send_signal(signal.SIGHUP)
    assert manager.recv(4096).startswith(b"RELOADING=1")
    assert manager.recv(4096) == b"READY=1"
    wait_until("worker-2's weight 3", lambda: members(rpctl)["worker-2"]["weight"] == 3)
    assert {n: m["pid"] for n, m in members(rpctl).items()} == pids, "a reread does not restart run groups"

    # SIGTERM: exit 0, STOPPING=1, the children stopped as `rpctl run` stops them.
    assert s.terminate() == 0
    assert manager.recv(4096) == b"STOPPING=1"
    assert not any(alive(p) for p in pids.values())
    manager.close()


def test_a_run_groups_count_changes_in_place_under_load(serve, tmp_path, rpctl):
    """A new count in the file grows or shrinks a run group without touching
    the members that stay: more members are started; the ones beyond the
    count are drained, stopped once drained, and unregistered.  Not one
    request fails."""
    config = tmp_path / "rpctl.toml"
    s = serve(run_config(config, 2))

    def active(names: set) -> dict:
        if rpctl("status", "--group", "web")[0] != 0:
            return {}  # serve has not made the group yet
        found = members(rpctl)
        return found if set(found) == names and all(m["state"] == "active" for m in found.values()) else {}

    pids = {n: m["pid"] for n, m in wait_until("two workers", lambda: active({"worker-1", "worker-2"})).items()}
    with ClientLoad(PORT, concurrency=4) as load:
        run_config(config, 3)
        s.proc.send_signal(signal.SIGHUP)
        grown = wait_until("worker-3 active", lambda: active({"worker-1", "worker-2", "worker-3"}))
        assert {n: grown[n]["pid"] for n in pids} == pids, "the members that stay are not restarted"
        wait_until("worker-3 serves", lambda: members(rpctl)["worker-3"]["selected"] > 20)

        run_config(config, 1)
        s.proc.send_signal(signal.SIGHUP)
        shrunk = wait_until("worker-2 and worker-3 removed", lambda: active({"worker-1"}), timeout=15)
        assert shrunk["worker-1"]["pid"] == pids["worker-1"]
        gone = [pids["worker-2"], grown["worker-3"]["pid"]]
        wait_until("their children stopped", lambda: not any(alive(p) for p in gone))
        time.sleep(0.5)  # load on worker-1 alone

        # Down while a change is under way, then back up: whether worker-2 was
        # still draining (kept) or already stopping (started again once gone),
        # the group ends as the file says.
        for count in (2, 1, 2):
            run_config(config, count)
            s.proc.send_signal(signal.SIGHUP)
            time.sleep(0.3)
        wait_until("worker-1 and worker-2 active", lambda: active({"worker-1", "worker-2"}), timeout=15)
        assert members(rpctl)["worker-1"]["pid"] == pids["worker-1"]
    tally = load.tally
    print(f"load: {tally.total_ok()} requests, failures {dict(tally.failures)}")
    assert tally.total_ok() > 0 and sum(tally.failures.values()) == 0, dict(tally.failures)
    err = s.stderr()
    assert "count 2 -> 3" in err and "count 3 -> 1" in err, err
    assert s.proc.poll() is None, err


def test_serve_removes_the_state_of_dead_namespaces(serve, tmp_path):
    name = f"rpctl-served{os.getpid()}"
    folder = None
    try:
        folder = namespace_with_a_group(name)
        drop_netns(name)
        assert os.path.isdir(folder)
        s = serve(adopt_config(tmp_path / "rpctl.toml"))
        err = s.wait_logged("removed the state of dead network namespace")
        assert f"{os.path.basename(folder)} (tcp-7000)" in err, err
        assert not os.path.exists(folder)
    finally:
        drop_netns(name)
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


def test_a_quic_run_group_hands_every_child_its_server_id_across_a_restart(serve, tmp_path, rpctl):
    """`quic = true` on a run group: each child finds its member's server id in
    RPCTL_QUIC_SERVER_ID (as status --json shows it), the same after a restart."""
    seen = tmp_path / "children"
    script = f'echo "$RPCTL_MEMBER $RPCTL_QUIC_SERVER_ID" >> {seen}; exec "$@"'
    command = ", ".join(json.dumps(a) for a in ["/bin/sh", "-c", script, "sh", *WORKER, "--proto", "udp"])
    config = tmp_path / "rpctl.toml"
    config.write_text(textwrap.dedent(f"""\
        [[group]]
        name = "q"
        listen = "udp:127.0.0.1:{PORT}"
        run = {{ command = [{command}], count = 2 }}
        quic = true
        quic_server_id_length = 2
        """))
    s = serve(str(config))

    def active():
        found = members(rpctl, "q")
        return found if len(found) == 2 and all(m["state"] == "active" for m in found.values()) else None

    def handed() -> list[tuple[str, str]]:
        return [tuple(line.split()) for line in seen.read_text().splitlines()] if seen.exists() else []

    found = wait_until("both children active", lambda: active() if len(handed()) == 2 else None)
    ids = {name: m["quic_server_id"] for name, m in found.items()}
    assert sorted(handed()) == sorted(ids.items()), (handed(), ids)
    assert len(set(ids.values())) == 2 and all(len(sid) == 4 for sid in ids.values()), ids

    victim = found["worker-1"]["pid"]
    os.kill(victim, signal.SIGKILL)
    wait_until("worker-1 restarted", lambda: len(handed()) == 3 and (active() or {}).get("worker-1", {}).get("pid")
               not in (None, victim), timeout=10)
    assert handed()[2] == ("worker-1", ids["worker-1"]), handed()
    assert {n: m["quic_server_id"] for n, m in members(rpctl, "q").items()} == ids

    # Options differ from the group's: logged, the group and its children go on as they are.
    pids = {n: m["pid"] for n, m in members(rpctl, "q").items()}
    config.write_text(config.read_text().replace("quic_server_id_length = 2", "quic_server_id_length = 1"))
    mark = len(s.stderr())
    s.proc.send_signal(signal.SIGHUP)
    s.wait_logged("quic_server_id_length is 2 in the kernel and 1 in the file", after=mark)
    assert {n: (m["pid"], m["quic_server_id"]) for n, m in members(rpctl, "q").items()} == {
        n: (pids[n], ids[n]) for n in ids}
    assert s.terminate() == 0
