"""The Debian package on a Debian 12 machine with systemd as PID 1 (a container on
this host, tests/support/container.py), next to nginx, under the hardened unit.

The package is built from this tree (./scripts/package.sh) and installed with apt
inside, as an operator would: the service is enabled and started by the install,
reaches ready (Type=notify), adopts nginx's listeners from /etc/rpctl/rpctl.toml,
follows nginx's reloads and its own, leaves steering on when stopped, comes back by
itself after a reboot, logs to the journal, writes the audit trail, and leaves only
the pinned state behind when purged.  The second test upgrades the package under a
steady load (a second .deb of the same tree, `package.sh --version-suffix`), then
removes it and purges it: steering never stops.  The third runs every kind of group
and every background task of serve inside the unit's sandbox, then SIGKILLs serve as
an OOM kill would: its run group's workers serve on, and the serve systemd starts
again takes them back.

Each test boots its own machine (under a second) over a throwaway overlay of a root
that is built once and cached (tests/support/container.py); connections are made
inside the machine, on its own loopback.
"""

from __future__ import annotations

import contextlib
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
UPGRADE_SUFFIX = "+upgrade1"
UPGRADE_DEB = "/root/rpctl-upgrade.deb"
# The .deb unpacked (not installed), to read the groups with once the package is removed.
READER = "/root/reader"
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
NGINX_1_AT_3 = 'weights = { "nginx-1" = 3 }\n'
API = f"""
[[group]]
name = "api"
listen = "tcp:127.0.0.1:{API_PORT}"
run = {{ command = ["python3", "-m", "rpctl.cli.demo.worker", "--name", "$RPCTL_MEMBER"], count = 2 }}
"""
# Connections from inside the machine: argv PORT N (N connections), or PORT --until FILE
# PER_SECOND (a steady load until FILE exists); prints {"ok": {reply body: count},
# "failed": {error: count}}.
CLIENT = """
import collections, json, os, socket, sys, time
port = int(sys.argv[1])
if sys.argv[2] == "--until":
    stop, pause = sys.argv[3], 1 / float(sys.argv[4])
    more = lambda made: not os.path.exists(stop)
else:
    pause, more = 0, lambda made: made < int(sys.argv[2])
ok, failed = collections.Counter(), collections.Counter()
while more(sum(ok.values()) + sum(failed.values())):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
            reply = b"".join(iter(lambda: s.recv(4096), b""))
        head, separator, body = reply.partition(b"\\r\\n\\r\\n")
        if not separator:
            raise ValueError(f"no reply but {reply[:60]!r}")
        ok[body.strip().decode()] += 1
    except (OSError, ValueError) as e:
        failed[repr(e)] += 1
    time.sleep(pause)
print(json.dumps({"ok": ok, "failed": failed}))
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


def build_package(*options: str) -> Path:
    """The .deb ./scripts/package.sh OPTIONS builds of this tree (lintian is package.sh's own check)."""
    r = subprocess.run([str(REPO / "scripts" / "package.sh"), "--no-lintian", *options], capture_output=True,
                       text=True, stdin=subprocess.DEVNULL, timeout=900)
    built = re.findall(r"^package: built (\S+\.deb)$", r.stdout, re.M)
    if r.returncode != 0 or not built:
        pytest.fail(f"./scripts/package.sh {' '.join(options)} failed ({r.returncode}): "
                    f"{(r.stdout + r.stderr)[-2000:]}", pytrace=False)
    return Path(built[-1])


def deb_version(deb: Path) -> str:
    return subprocess.run(["dpkg-deb", "--field", str(deb), "Version"], capture_output=True, text=True,
                          check=True).stdout.strip()


@pytest.fixture(scope="module")
def package() -> Path:
    """The .deb of this tree."""
    try:
        container.check_host()
    except container.ContainerError as e:
        pytest.fail(f"cannot boot a test machine: {e}", pytrace=False)
    return build_package()


@pytest.fixture(scope="module")
def upgrade_package(package) -> Path:
    """The .deb of this tree as a newer version (<version>+upgrade1)."""
    return build_package("--version-suffix", UPGRADE_SUFFIX)


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


def install(m: container.Container, deb: str = DEB) -> None:
    m.run("apt-get", "install", "-y", "-q", deb, timeout=300)


def purge(m: container.Container, *own_files: str) -> None:
    """`apt purge rpctl`, and the test's OWN_FILES removed: nothing of rpctl is left
    but the pinned state, which steers on."""
    m.run("apt-get", "purge", "-y", "-q", "rpctl", timeout=120)
    m.run("rm", "-rf", DEB, *own_files)
    left = m.run("find", "/", "-xdev", "-name", "*rpctl*").stdout.split()
    assert left == [], f"left behind by apt purge: {left}"
    assert m.run("systemctl", "cat", "rpctl", check=False).returncode != 0, "the unit is gone"
    assert m.run("sh", "-c", "ls -d /sys/fs/bpf/rpctl/*/web", check=False).returncode == 0, "the pinned state stays"
    assert len(connect(m, 50)) >= 1


# The installed rpctl, and one unpacked from a .deb (not installed) to look with once the package is gone.
RPCTL = ("rpctl",)


def unpacked_rpctl(m: container.Container, deb: str) -> tuple[str, ...]:
    m.run("dpkg-deb", "-x", deb, READER)
    return ("env", f"PYTHONPATH={READER}/usr/lib/python3/dist-packages", "python3", "-s", f"{READER}/usr/bin/rpctl")


def members(m: container.Container, group: str = "web", rpctl: tuple[str, ...] = RPCTL) -> dict[str, dict]:
    """The group's members as `rpctl status --json` gives them ({} while there is no group)."""
    r = m.run(*rpctl, "status", "--group", group, "--json", check=False)
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
    """N connections from inside the machine, every one answered: {reply body (nginx: the
    worker's pid): count}."""
    made = json.loads(m.run("python3", "-c", CLIENT, str(port), str(n)).stdout)
    assert not made["failed"], made
    return made["ok"]


@contextlib.contextmanager
def steady_load(m: container.Container, per_second: int = 200, port: int = PORT):
    """Connections to PORT from inside the machine, about PER_SECOND, while the block runs;
    the dict it yields then holds what CLIENT made of them ({"ok": ..., "failed": ...})."""
    stop = "/run/load.stop"
    m.run("rm", "-f", stop)
    made: dict = {}
    client = m.start("python3", "-c", CLIENT, str(port), "--until", stop, str(per_second))
    try:
        yield made
    finally:
        with contextlib.suppress(container.ContainerError):
            m.run("touch", stop)
        try:
            out, err = client.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            client.kill()
            out, err = client.communicate()
    assert client.returncode == 0, f"the load client failed: {err}"
    made.update(json.loads(out))


def selected(m: container.Container, rpctl: tuple[str, ...] = RPCTL, group: str = "web") -> int:
    return sum(x["selected"] for x in members(m, group, rpctl).values())


def main_pid(m: container.Container, unit: str = "rpctl") -> int:
    return int(m.run("systemctl", "show", "-p", "MainPID", "--value", unit).stdout.strip())


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
    m.write("/etc/rpctl/rpctl.toml", WEB + NGINX_1_AT_3)
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
    purge(m)


def test_upgrade_under_load_keeps_steering_then_remove_and_purge(machine, package, upgrade_package):
    m = machine
    newer = deb_version(upgrade_package)
    assert newer == deb_version(package) + UPGRADE_SUFFIX
    install(m)
    m.write("/etc/rpctl/rpctl.toml", WEB + NGINX_1_AT_3)
    m.run("systemctl", "reload", "rpctl")
    wait_until("nginx-1 at weight 3 beside nginx-2", lambda: {
        name: x["weight"] for name, x in members(m).items()} == {"nginx-1": 3, "nginx-2": 1}, timeout=60, interval=0.2)
    m.write(UPGRADE_DEB, upgrade_package.read_bytes())
    old_serve = main_pid(m)
    before = {name: x["selected"] for name, x in members(m).items()}

    # `apt install` of the newer package while clients connect all along.
    with steady_load(m) as load:
        wait_until("the load steered", lambda: selected(m) > sum(before.values()) + 20, 30, 0.2)
        upgrading = selected(m)
        install(m, UPGRADE_DEB)
        upgraded = selected(m)
        wait_until("connections steered after the upgrade", lambda: selected(m) > upgraded + 20, 30, 0.2)
    after = {name: x["selected"] for name, x in members(m).items()}
    steered = sum(after.values()) - sum(before.values())
    answered = sum(load["ok"].values())
    assert not load["failed"], f"connections failed during the upgrade: {load}"
    assert upgraded > upgrading, "connections were steered while apt upgraded the package"
    assert steered >= answered > 0, "the program steered every connection of the load"
    # The file's weights held all along: nginx-1 took about 3/4 of the load.
    assert 0.6 < (after["nginx-1"] - before["nginx-1"]) / steered < 0.9, (before, after)

    # serve was restarted by the upgrade, and the new one keeps the group true to the file.
    assert active(m) and main_pid(m) not in (0, old_serve), m.journal("-u", "rpctl")
    assert m.run("rpctl", "--version").stdout.strip() == f"rpctl {newer}"
    assert m.run("dpkg-query", "-W", "-f", "${Version}", "rpctl").stdout == newer
    assert m.run("cat", "/etc/rpctl/rpctl.toml").stdout == WEB + NGINX_1_AT_3, "the upgrade kept the edited file"
    assert members(m)["nginx-1"]["weight"] == 3
    nginx_workers(m, 3)
    wait_members(m, {"nginx-1", "nginx-2", "nginx-3"}, timeout=10)

    # Removed: serve stopped, the file and the program cache kept, and steering goes on as it was.
    reader = unpacked_rpctl(m, UPGRADE_DEB)
    m.run("apt-get", "remove", "-y", "-q", "rpctl", timeout=120)
    assert not active(m)
    assert m.run("sh", "-c", "command -v rpctl", check=False).returncode != 0, "rpctl is removed"
    assert m.run("dpkg-query", "-W", "-f", "${Status}", "rpctl").stdout == "deinstall ok config-files"
    assert m.run("cat", "/etc/rpctl/rpctl.toml").stdout == WEB + NGINX_1_AT_3
    assert m.run("ls", "/var/cache/rpctl").stdout.split(), "the program cache stays until purge"
    still = members(m, rpctl=reader)
    assert set(still) == {"nginx-1", "nginx-2", "nginx-3"} and still["nginx-1"]["weight"] == 3, still
    before = selected(m, reader)
    connect(m, 200)
    assert selected(m, reader) - before >= 200, "the program steers with rpctl removed"

    # Purged after the removal (only the purge part of the maintainer scripts runs now).
    purge(m, UPGRADE_DEB, READER)


def test_every_kind_of_group_and_serves_background_work_run_in_the_sandbox_and_outlive_an_oom_kill(machine):
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

    # An OOM kill of serve (SIGKILL of the main process alone): systemd starts serve again
    # (Restart=on-failure), and the run group's workers serve on all along (KillMode=process:
    # systemd kills no other process of the unit's); the new serve takes them back.
    workers = {name: x["pid"] for name, x in wait_members(m, {"worker-1", "worker-2"}, group="api").items()}
    killed, before = main_pid(m), selected(m, group="api")
    with steady_load(m, port=API_PORT) as load:
        wait_until("the load answered", lambda: selected(m, group="api") > before + 20, 30, 0.2)
        m.run("systemctl", "kill", "--kill-whom=main", "--signal=SIGKILL", "rpctl")
        wait_until("serve started again by systemd", lambda: active(m) and main_pid(m) not in (0, killed), 30, 0.2)
        wait_until("the new serve took back its workers", lambda: all(
            f"took back {name} (pid {pid})" in m.journal("-u", "rpctl") for name, pid in workers.items()), 60, 0.5)
        back = selected(m, group="api")
        wait_until("connections steered by the taken-back workers", lambda: selected(m, group="api") > back + 20,
                   30, 0.2)
    print(f"through the OOM kill and the restart: {load}")
    assert sum(load["ok"].values()) > 100 and not load["failed"], f"connections failed through the OOM kill: {load}"
    assert {name: x["pid"] for name, x in members(m, "api").items()} == workers, "the same workers serve"

    # Stopped, serve stops the workers itself (SIGTERM) before it exits: none is left.
    m.run("systemctl", "stop", "rpctl", timeout=60)
    left = m.run("pgrep", "-af", "rpctl.cli.demo.worker", check=False).stdout
    assert not left, left + m.run("systemctl", "status", "rpctl", check=False).stdout
