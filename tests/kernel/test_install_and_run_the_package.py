"""The Debian package on a Debian 12 machine with systemd as PID 1 (a container on
this host, tests/support/container.py), next to nginx, under the hardened unit.

The package is built from this tree (./scripts/package.sh) and installed with apt
inside, as an operator would: the service is enabled and started by the install,
reaches ready (Type=notify), adopts nginx's listeners from /etc/rpctl/rpctl.toml,
follows nginx's reloads and its own, leaves steering on when stopped, comes back by
itself after a reboot, logs to the journal, writes the audit trail, and leaves only
the pinned state behind when purged.  The second test runs every kind of group and
every background task of serve inside the unit's sandbox.

Each test boots its own machine (under a second) over a throwaway overlay of a root
that is built once and cached (tests/support/container.py); connections are made
inside the machine, on its own loopback.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.support import container
from tests.support.launched import wait_until
from tests.support.syslog_socket import logfmt_fields

pytestmark = pytest.mark.kernel

REPO = Path(__file__).resolve().parents[2]
DEB = "/root/rpctl.deb"
PORT = 8080
API_PORT = 9090
METRICS = "127.0.0.1:9464"
NGINX_SITE = f"""server {{
    listen 127.0.0.1:{PORT} reuseport;
    access_log off;
    location / {{ return 200 "$pid\\n"; }}
}}
"""
WEB = f"""[[group]]
name = "web"
listen = "tcp:127.0.0.1:{PORT}"
adopt = {{ comm = "nginx" }}
"""
API = f"""
[[group]]
name = "api"
listen = "tcp:127.0.0.1:{API_PORT}"
run = {{ command = ["python3", "-m", "rpctl.cli.demo.worker", "--name", "$RPCTL_MEMBER"], count = 2 }}
"""
# Connections from inside the machine: argv N PORT; prints {reply body: count}.
CLIENT = """
import collections, json, socket, sys
counts = collections.Counter()
for _ in range(int(sys.argv[1])):
    with socket.create_connection(("127.0.0.1", int(sys.argv[2])), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
        reply = b"".join(iter(lambda: s.recv(4096), b""))
    counts[reply.split(b"\\r\\n\\r\\n", 1)[1].strip().decode()] += 1
print(json.dumps(counts))
"""
# A group in a network namespace that then goes away: argv PORT.
DEAD_NAMESPACE_GROUP = """
import os, socket, subprocess, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen()
subprocess.run(["rpctl", "register", "gone-1", "--pid", str(os.getpid()), "--fd", str(s.fileno())], check=True)
"""


@pytest.fixture(scope="module")
def package() -> Path:
    """The .deb of this tree, built by ./scripts/package.sh (lintian is package.sh's own check)."""
    try:
        container.check_host()
    except container.ContainerError as e:
        pytest.fail(f"cannot boot a test machine: {e}", pytrace=False)
    r = subprocess.run([str(REPO / "scripts" / "package.sh"), "--no-lintian"], capture_output=True, text=True,
                       stdin=subprocess.DEVNULL, timeout=900)
    built = re.findall(r"^package: built (\S+\.deb)$", r.stdout, re.M)
    if r.returncode != 0 or not built:
        pytest.fail(f"./scripts/package.sh failed ({r.returncode}): {(r.stdout + r.stderr)[-2000:]}", pytrace=False)
    return Path(built[-1])


@pytest.fixture(scope="module")
def root(package) -> Path:
    """The cached Debian root with everything the package needs (built on the first run)."""
    try:
        return container.cached_root(container.root_packages(container.package_fields(package)))
    except container.ContainerError as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture
def machine(root, package):
    """A machine booted from the root, with the .deb copied in and nginx serving PORT (2 workers)."""
    container.sweep_leftovers()
    m = container.Container(root)
    try:
        try:
            m.boot()
            m.write(DEB, package.read_bytes())
            m.write("/etc/nginx/sites-available/default", NGINX_SITE)
            nginx_workers(m, 2)
        except container.ContainerError as e:
            pytest.fail(f"cannot set up the test machine: {e}", pytrace=False)
        yield m
        # Shown when the test failed: what the service said.
        print("rpctl's journal:\n" + (m.journal("-u", "rpctl")[-4000:] if m.leader else m.console_tail(40)))
    finally:
        m.close()


# What the operator does and looks at -------------------------------------------------


def nginx_workers(m: container.Container, n: int) -> None:
    """nginx with N workers (`systemctl reload nginx`): N listeners on PORT."""
    m.run("sed", "-i", f"s/^worker_processes .*/worker_processes {n};/", "/etc/nginx/nginx.conf")
    m.run("systemctl", "reload", "nginx")


def install(m: container.Container) -> None:
    m.run("apt-get", "install", "-y", "-q", DEB, timeout=300)


def members(m: container.Container, group: str = "web") -> dict[str, dict]:
    """The group's members as `rpctl status --json` gives them ({} while there is no group)."""
    r = m.run("rpctl", "status", "--group", group, "--json", check=False)
    if r.returncode != 0:
        return {}
    (view,) = json.loads(r.stdout)["groups"]
    return {x["name"]: x for x in view["members"] if x["state"] != "gone"}


def wait_members(m: container.Container, names: set[str], group: str = "web", timeout: float = 60.0) -> dict:
    """The group's members once they are `names` (the first look of serve at a group compiles its program)."""

    def exactly() -> dict | None:
        got = members(m, group)
        return got if set(got) == names else None

    return wait_until(f"members {sorted(names)} of {group}", exactly, timeout, 0.2)


def connect(m: container.Container, n: int, port: int = PORT) -> dict[str, int]:
    """N connections from inside the machine: {reply body (nginx: the worker's pid): count}."""
    return json.loads(m.run("python3", "-c", CLIENT, str(n), str(port)).stdout)


def selected(m: container.Container) -> int:
    return sum(x["selected"] for x in members(m).values())


def active(m: container.Container, unit: str = "rpctl") -> bool:
    return m.run("systemctl", "is-active", unit, check=False).stdout.strip() == "active"


def audit_lines(m: container.Container) -> list[dict[str, str]]:
    """The audit trail (`journalctl -t rpctl`), its key=value lines read back."""
    return [logfmt_fields(line) for line in m.journal("-t", "rpctl").splitlines()]


def namespace_folders(m: container.Container) -> set[str]:
    """The state folders of network namespaces in the machine's bpffs (netns<cookie>)."""
    return {f for f in m.run("ls", "/sys/fs/bpf/rpctl").stdout.split() if re.fullmatch(r"net(ns)?\d+", f)}


def run_in_the_units_sandbox(m: container.Container, *argv: str) -> tuple[int, str]:
    """ARGV as a oneshot service with rpctl.service's sandbox (its [Service] lines,
    but for how it starts, reloads and restarts): exit status and output."""
    unit = m.run("cat", "/lib/systemd/system/rpctl.service").stdout
    lifecycle = re.compile(r"^(Type|NotifyAccess|ExecStart|ExecReload|Restart\w*|KillMode|TimeoutStopSec)=", re.M)
    kept = [line for line in unit.splitlines() if not lifecycle.match(line)]
    text = "\n".join(kept).replace("[Service]", f"[Service]\nType=oneshot\nExecStart={' '.join(argv)}")
    m.write("/run/systemd/system/rpctl-sandboxed.service", text)
    m.run("systemctl", "daemon-reload")
    m.run("systemctl", "start", "rpctl-sandboxed", check=False, timeout=120)
    status = int(m.run("systemctl", "show", "-p", "ExecMainStatus", "--value", "rpctl-sandboxed").stdout.strip())
    return status, m.journal("-u", "rpctl-sandboxed", "_PID=" + m.run(
        "systemctl", "show", "-p", "ExecMainPID", "--value", "rpctl-sandboxed").stdout.strip())


# The tests ----------------------------------------------------------------------------


def test_install_enable_reload_stop_reboot_and_purge(machine):
    m = machine
    install(m)
    assert m.run("systemctl", "is-enabled", "rpctl").stdout.strip() == "enabled"
    assert active(m), "installing the package starts the service"
    wait_until("serve says it idles with the shipped file",
               lambda: "names no group" in m.journal("-u", "rpctl"), timeout=30)

    # The operator names the group, and turns the service off and on again.
    m.write("/etc/rpctl/rpctl.toml", WEB)
    m.run("systemctl", "disable", "--now", "rpctl")
    m.run("systemctl", "enable", "--now", "rpctl", timeout=120)  # returns once serve said READY=1
    assert active(m), m.run("systemctl", "status", "rpctl", check=False).stdout
    wait_members(m, {"nginx-1", "nginx-2"})  # READY comes after the first reconcile: at most a moment more
    before = selected(m)
    assert len(connect(m, 200)) == 2, "both workers serve"
    assert selected(m) - before >= 200, "the program steered every connection"

    # nginx reloaded with one worker more: its new listener joins.
    nginx_workers(m, 3)
    wait_members(m, {"nginx-1", "nginx-2", "nginx-3"}, timeout=10)

    # New weights in the file, applied by a reload of the service.
    m.write("/etc/rpctl/rpctl.toml", WEB + 'weights = { "nginx-1" = 3 }\n')
    m.run("systemctl", "reload", "rpctl")
    wait_until("nginx-1 at weight 3", lambda: members(m)["nginx-1"]["weight"] == 3, timeout=10)

    # An operator's own command, for the audit trail.
    m.run("rpctl", "drain", "nginx-2")
    m.run("rpctl", "undrain", "nginx-2")

    # Stopped, the service leaves steering on: connections are still steered, weights kept.
    m.run("systemctl", "stop", "rpctl")
    assert not active(m)
    before = selected(m)
    connect(m, 300)
    assert selected(m) - before >= 300, "the program still steers with serve stopped"
    assert members(m)["nginx-1"]["weight"] == 3

    # Rebooted: a new bpffs (nothing pinned), and serve brings the group back by itself.
    m.run("systemctl", "start", "rpctl", timeout=120)
    m.reboot()
    assert active(m), m.journal("-u", "rpctl", "-b")
    back = wait_members(m, {"nginx-1", "nginx-2", "nginx-3"})
    assert back["nginx-1"]["weight"] == 3
    before = selected(m)
    connect(m, 100)
    assert selected(m) - before >= 100

    # The journal: serve's own lines, and the audit trail with who did what.
    log = m.journal("-u", "rpctl")
    assert "rpctl serve: group web: + nginx-1" in log and "rpctl serve: group web: nginx-1 weight 1 -> 3" in log
    trail = audit_lines(m)
    by_serve = [a["change"] for a in trail if a["command"] == "serve" and a["group"] == "web"]
    assert any(c.startswith(f"created (tcp:127.0.0.1:{PORT}); + nginx-") for c in by_serve), by_serve
    assert "nginx-1 weight 1 -> 3" in by_serve and any(c.startswith("+ nginx-3 ") for c in by_serve), by_serve
    operator = [(a["command"], a["change"], a["uid"], a["user"]) for a in trail if a["command"] != "serve"]
    assert operator == [("rpctl drain nginx-2", "nginx-2 active -> draining", "0", "root"),
                        ("rpctl undrain nginx-2", "nginx-2 draining -> active", "0", "root")], operator

    # Purged: nothing of rpctl is left but the pinned state, which steers on.
    m.run("apt-get", "purge", "-y", "-q", "rpctl", timeout=120)
    m.run("rm", DEB)
    left = m.run("find", "/", "-xdev", "-name", "*rpctl*").stdout.split()
    assert left == [], f"left behind by apt purge: {left}"
    assert m.run("systemctl", "cat", "rpctl", check=False).returncode != 0, "the unit is gone"
    assert m.run("sh", "-c", "ls -d /sys/fs/bpf/rpctl/*/web", check=False).returncode == 0, "the pinned state stays"
    assert len(connect(m, 50)) >= 1


def test_every_kind_of_group_and_serves_background_work_run_in_the_sandbox(machine):
    m = machine
    install(m)
    # adopt (nginx, adaptive) and run groups, with the metrics port, from one file.
    m.write("/etc/rpctl/rpctl.toml", WEB + "adaptive = true\n" + API)
    m.write("/etc/systemd/system/rpctl.service.d/metrics.conf",
            f"[Service]\nExecStart=\nExecStart=/usr/bin/rpctl serve -c /etc/rpctl/rpctl.toml --metrics {METRICS}\n")
    m.run("systemctl", "daemon-reload")
    m.run("systemctl", "restart", "rpctl", timeout=120)
    assert active(m), m.journal("-u", "rpctl")
    wait_members(m, {"nginx-1", "nginx-2"})
    wait_members(m, {"worker-1", "worker-2"}, group="api")
    assert sorted(connect(m, 20, API_PORT)) == ["worker-1", "worker-2"], "the launched workers serve"
    view = json.loads(m.run("rpctl", "status", "--group", "web", "--json").stdout)["groups"][0]
    assert view["adaptive"], view

    metrics = m.run("python3", "-c", f"import urllib.request; print(urllib.request.urlopen("
                                     f"'http://{METRICS}/metrics', timeout=5).read().decode())").stdout
    assert re.search(r'^rpctl_member_weight\{.*group="web".*\} 1', metrics, re.M), metrics[:2000]
    assert re.search(r'^rpctl_member_weight\{.*group="api".*\} 1', metrics, re.M)

    # Cleanup: the state of a network namespace that went away is removed at serve's start.
    m.write("/root/dead_namespace_group.py", DEAD_NAMESPACE_GROUP)
    m.run("ip", "netns", "add", "short-lived")
    m.run("nsenter", "--net=/run/netns/short-lived", "python3", "/root/dead_namespace_group.py", "7000", timeout=120)
    m.run("ip", "netns", "del", "short-lived")
    assert len(namespace_folders(m)) == 2
    m.run("systemctl", "restart", "rpctl", timeout=120)
    wait_until("the dead namespace's state removed", lambda: len(namespace_folders(m)) == 1, timeout=20)
    assert "removed the state of dead network namespace" in m.journal("-u", "rpctl")
    assert any(a["group"] == "tcp-7000" and a["command"] == "serve" and a["change"].startswith("removed the state")
               for a in audit_lines(m))

    # pin rss: the device reader (ethtool netlink and ioctl, /proc/interrupts) answers inside
    # the sandbox as outside it: loopback has one queue and no RSS, nothing is refused.
    explain = ["rpctl", "pin", "rss", "--dev", "lo", "--explain", "--group", "web"]
    outside = m.run(*explain, check=False)
    status, inside = run_in_the_units_sandbox(m, "/usr/bin/" + " ".join(explain))
    assert (status, outside.returncode) == (4, 4)
    for line in ("device lo: 1 receive queue (netlink)", "problem: the device has no RSS"):
        assert line in outside.stdout and line in inside, inside
