"""SIGKILL `rpctl serve` (an OOM kill) under load: its run groups' servers serve on.

serve starts the children of its run groups so that they outlive it
(decision 0025).  While no serve runs, a TCP run group under load refuses,
resets and loses nothing, and a UDP run group with flow affinity moves no
flow; the next serve takes the same processes back (the same pids, the same
sockets), supervises them (a child of theirs that dies is restarted), and
stops them when it is stopped.  A child whose command the file changed
while no serve ran is replaced on its own socket; a live launcher's
children are never taken from it.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import sys
import textwrap
import time

import pytest
from rpctl.controller.store.state import Layout

from tests.support.launched import alive, members, wait_until
from tests.support.traffic import ClientLoad

pytestmark = pytest.mark.kernel

TCP_PORT = 7330
UDP_PORT = 7331
WORKER = [sys.executable, "-m", "rpctl.cli.demo.worker", "--name", "$RPCTL_MEMBER"]
NAMES = {"worker-1", "worker-2", "worker-3"}
FLOWS = 64          # UDP client sockets, each a flow of its own
DEAD_FOR = 2.0      # seconds with no serve at all, under load


def config_text(worker: list[str]) -> str:
    command = ", ".join(f'"{a}"' for a in worker)
    return textwrap.dedent(f"""\
        [[group]]
        name = "web"
        listen = "tcp:127.0.0.1:{TCP_PORT}"
        run = {{ command = [{command}], count = 3 }}

        [[group]]
        name = "dns"
        listen = "udp:127.0.0.1:{UDP_PORT}"
        run = {{ command = [{command}, "--proto", "udp"], count = 3 }}
        flow_affinity = true
        """)


@pytest.fixture
def serve(launch):
    def start(config: str):
        return launch([], [], argv=["serve", "-c", config])

    return start


def runs_its_command(pid: int) -> bool:
    """Whether the process has exec'd the worker: a child outlives serve from that moment on
    (until then its wrapper dies with serve: the moments between its registration and its exec)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"rpctl.cli.demo.worker" in f.read()
    except OSError:
        return False


def active(rpctl, group: str) -> dict | None:
    """The group's members once all three are active and running their command, by name."""
    try:
        found = members(rpctl, group)
    except AssertionError:  # not created yet
        return None
    if set(found) == NAMES and all(m["state"] == "active" and runs_its_command(m["pid"]) for m in found.values()):
        return found
    return None


def pids(rpctl, group: str) -> dict[str, int]:
    return {n: m["pid"] for n, m in wait_until(f"{group}'s members active", lambda: active(rpctl, group)).items()}


class Flows:
    """FLOWS UDP sockets, each asking the group in turn: which member answers it."""

    def __init__(self):
        self.socks = []
        for _ in range(FLOWS):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", 0))
            s.settimeout(2)
            self.socks.append(s)

    def ask(self) -> list[str]:
        answers = []
        for s in self.socks:
            s.sendto(b"?", ("127.0.0.1", UDP_PORT))
            answers.append(s.recv(64).decode().strip())
        return answers

    def close(self):
        for s in self.socks:
            s.close()


def test_a_killed_serves_run_groups_serve_on_and_the_next_serve_takes_them_back(serve, tmp_path, rpctl):
    config = tmp_path / "rpctl.toml"
    config.write_text(config_text(WORKER))
    first = serve(str(config))
    web, dns = pids(rpctl, "web"), pids(rpctl, "dns")
    flows = Flows()
    try:
        homes = flows.ask()
        assert set(homes) <= NAMES and len(set(homes)) > 1, homes

        with ClientLoad(TCP_PORT, concurrency=4) as load:
            time.sleep(0.5)
            first.proc.send_signal(signal.SIGKILL)
            first.proc.wait(timeout=5)
            # No serve at all: the children go on, and so does steering.
            deadline = time.monotonic() + DEAD_FOR
            while time.monotonic() < deadline:
                assert flows.ask() == homes, "a flow moved while no serve ran"
                time.sleep(0.1)
            assert all(alive(p) for p in [*web.values(), *dns.values()]), "a child died with serve"

            second = serve(str(config))
            # Logged once web's children were taken back, before dns's are looked for.
            err = second.wait_logged("took over group web: its launcher had died", timeout=15)
            assert pids(rpctl, "web") == web and pids(rpctl, "dns") == dns, err
            time.sleep(0.5)
        tally = load.tally
        print(f"through the kill and the next serve: {tally.sent} connections, failures {dict(tally.failures)}")
        assert tally.sent > 500, tally.to_dict()
        assert sum(tally.failures.values()) == 0, tally.to_dict()
        assert flows.ask() == homes, "a flow moved when the next serve took its member back"
        for name in NAMES:
            assert f"took back {name} (pid {web[name]})" in err, err

        # The next serve supervises what it took back: a child that dies is restarted.
        mark = len(second.stderr())
        victim = web["worker-2"]
        os.kill(victim, signal.SIGKILL)
        wait_until("worker-2 restarted", lambda: (active(rpctl, "web") or {}).get("worker-2", {}).get("pid")
                   not in (None, victim), timeout=10)
        assert "worker-2 (pid %d) exited" % victim in second.stderr()[mark:], second.stderr()[mark:]

        # Stopped in order, it stops them all and removes the groups it took over.
        everyone = [*pids(rpctl, "web").values(), *dns.values()]
        assert second.terminate() == 0
        assert not any(alive(p) for p in everyone), [p for p in everyone if alive(p)]
        assert Layout().groups() == [], Layout().groups()
    finally:
        flows.close()


def test_a_child_of_another_command_is_replaced_on_its_own_socket(serve, tmp_path, rpctl):
    config = tmp_path / "rpctl.toml"
    config.write_text(config_text(WORKER))
    first = serve(str(config))
    before = wait_until("web active", lambda: active(rpctl, "web"))
    pids(rpctl, "dns")
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(timeout=5)

    # The file changes while no serve runs: the next serve's command differs.
    config.write_text(config_text([*WORKER, "--accept-delay", "0"]))
    second = serve(str(config))
    err = second.wait_logged("runs another command", timeout=15)
    after = wait_until("web active, every child new", lambda: (
        (a := active(rpctl, "web")) and all(a[n]["pid"] != before[n]["pid"] for n in NAMES) and a))
    assert {n: m["cookie"] for n, m in after.items()} == {n: m["cookie"] for n, m in before.items()}, \
        "the new children serve the old sockets"
    wait_until("the old children gone", lambda: not any(alive(m["pid"]) for m in before.values()))
    assert "took back" not in err, err
    assert second.terminate() == 0


def test_a_live_launchers_children_are_not_taken(launch, serve, tmp_path, rpctl):
    run = launch(["--group", "web", "-n", 3, "--listen", f"127.0.0.1:{TCP_PORT}"], WORKER)
    run.wait_members(rpctl, NAMES)
    config = tmp_path / "rpctl.toml"
    config.write_text(config_text(WORKER))
    s = serve(str(config))
    s.wait_logged("already has a live member", timeout=15)
    assert "took back" not in s.stderr(), s.stderr()
    assert run.proc.poll() is None
    assert set(run.wait_members(rpctl, NAMES)) == NAMES


def test_a_child_stopped_when_serve_is_killed_lives_on(serve, tmp_path, rpctl):
    """A process group left without its parent in the session is sent SIGHUP by the kernel
    when one of its members is stopped: each child has a session of its own, so a child
    stopped (SIGSTOP, a debugger) at the moment serve dies lives on."""
    config = tmp_path / "rpctl.toml"
    config.write_text(config_text(WORKER))
    first = serve(str(config))
    web = pids(rpctl, "web")
    os.kill(web["worker-1"], signal.SIGSTOP)
    try:
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(timeout=5)
        time.sleep(0.3)
    finally:
        os.kill(web["worker-1"], signal.SIGCONT)
    time.sleep(0.3)
    assert all(alive(p) for p in web.values()), {n: alive(p) for n, p in web.items()}
    second = serve(str(config))
    second.wait_logged("took back worker-1", timeout=15)
    assert pids(rpctl, "web") == web
    assert second.terminate() == 0


def test_rpctl_run_of_the_group_takes_back_a_killed_serves_children(launch, serve, tmp_path, rpctl):
    config = tmp_path / "rpctl.toml"
    config.write_text(config_text(WORKER))
    first = serve(str(config))
    web = pids(rpctl, "web")
    pids(rpctl, "dns")
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(timeout=5)
    run = launch(["--group", "web", "-n", 3, "--listen", f"127.0.0.1:{TCP_PORT}"], WORKER)
    run.wait_logged("took back worker-3", timeout=15)
    assert pids(rpctl, "web") == web
    assert run.terminate() == 0
    assert not any(alive(p) for p in web.values())
    assert "web" not in Layout().groups(), "run took the group over: it removes it"

    # A launcher refused (options other than the group's) lets the children it took go on.
    dns = pids(rpctl, "dns")
    refused = launch(["--group", "dns", "-n", 3, "--proto", "udp", "--quic", "--listen", f"127.0.0.1:{UDP_PORT}"],
                     [*WORKER, "--proto", "udp"])
    assert refused.proc.wait(timeout=15) != 0
    assert "took back worker-1" in refused.stderr(), refused.stderr()
    assert all(alive(p) for p in dns.values()) and pids(rpctl, "dns") == dns
    second = serve(str(config))  # dns: taken back by the next serve, as ever
    second.wait_logged("took back worker-1", timeout=15)
    assert pids(rpctl, "dns") == dns
    assert second.terminate() == 0



def test_a_child_not_registered_yet_dies_with_a_killed_serve(serve, tmp_path, rpctl):
    """A child outlives serve only once it is registered (the next serve finds it by its
    registration): one started but not registered yet when serve is killed dies with it.
    The test holds the namespace's lock, so that serve's registration of a fourth member
    waits while its child is started."""
    config = tmp_path / "rpctl.toml"
    config.write_text(config_text(WORKER))
    first = serve(str(config))
    web = pids(rpctl, "web")
    pids(rpctl, "dns")  # serve's start is over: the lock is taken from none of its registrations
    config.write_text(config_text(WORKER).replace("count = 3 }", "count = 4 }", 1))
    mark = len(first.stderr())
    with Layout().ns_lock():
        first.proc.send_signal(signal.SIGHUP)
        line = first.wait_logged("started worker-4", after=mark)
        (child,) = re.findall(r"started worker-4 \(pid (\d+)\)", line[mark:])
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(timeout=5)
    wait_until("the unregistered child gone", lambda: not alive(int(child)), timeout=3)
    assert all(alive(p) for p in web.values()), "a registered child died with serve"
    second = serve(str(config))
    second.wait_logged("took back worker-3", timeout=15)
    wait_until("four web members active", lambda: len(members(rpctl, "web")) == 4 and all(
        m["state"] == "active" for m in members(rpctl, "web").values()))
    assert {n: m["pid"] for n, m in members(rpctl, "web").items() if n in web} == web
    assert second.terminate() == 0
