"""The soak's world: what runs in its network namespace, and how each part is
started, signalled and started again.

Under one `rpctl serve -c FILE` (serve.log, one instance after another):
  web   TCP, nginx (adopted by comm, `adaptive = true`), 2 to 4 workers
  app   TCP, a `run` group of 2 demo workers (HTTP, each answers its name)
  dns   UDP, a `run` group of 2 demo workers (each datagram answered with
        the member's name), flow affinity (the default)
  quic  UDP, `quic = true`, a `run` group of 2 aioquic echo servers
        (tests/support/quic_server.py) whose connection ids carry their
        QUIC-LB server id
Beside serve: a standalone `rpctl run` (group solo, 2 demo workers) and an
`rpctl demo --keep` (group demo-PORT), each signalled and started again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from tests.support.nginx import Nginx
from tests.support.quic import child_env, server_command

WEB, APP, DNS, QUIC, SOLO, DEMO, METRICS = 8080, 8081, 8053, 8443, 8082, 18080, 9464
RUN_GROUPS = ("app", "dns", "quic")  # serve launches their workers; they outlive a SIGKILLed serve
SERVED = ("web",) + RUN_GROUPS
WORKER = [sys.executable, "-m", "rpctl.cli.demo.worker", "--name", "$RPCTL_MEMBER"]
# dns's workers answer with their name and pid: a flow moved to the replacement of its
# member (same name, another socket) is seen too.  sh execs the worker in its own pid ($$).
DNS_WORKER = ["/bin/sh", "-c", 'exec "$0" -m rpctl.cli.demo.worker --name "$RPCTL_MEMBER-$$"', sys.executable]


def rpctl_argv(*args: object) -> list[str]:
    """rpctl through this interpreter (never the PATH's, which another checkout may point elsewhere)."""
    return [sys.executable, "-m", "rpctl.cli", *map(str, args)]


def toml_list(words: list[str]) -> str:
    return "[" + ", ".join(json.dumps(w) for w in words) + "]"


@dataclass
class Steering:
    """What the file says of web and app: weights by member name, drained names, the pin."""

    weights: dict = field(default_factory=dict)   # group -> {member: weight}
    drain: dict = field(default_factory=dict)     # group -> [member]
    pin: Optional[str] = None                     # web's pin mode, None: weighted

    def keys(self, group: str) -> str:
        out = ""
        if self.weights.get(group):
            out += "weights = { " + ", ".join(f'"{n}" = {w}' for n, w in sorted(self.weights[group].items())) + " }\n"
        if self.drain.get(group):
            out += f"drain = {toml_list(sorted(self.drain[group]))}\n"
        if group == "web" and self.pin:
            out += f'pin = "{self.pin}"\n'
        return out


def config(steering: Steering, cert: str, key: str) -> str:
    """The file serve reads."""
    quic_cmd = server_command(cert, key, "--grace", "2")
    return f"""\
[[group]]
name = "web"
listen = "tcp:127.0.0.1:{WEB}"
adopt = {{ comm = "nginx" }}
adaptive = true
{steering.keys("web")}
[[group]]
name = "app"
listen = "tcp:127.0.0.1:{APP}"
run = {{ command = {toml_list(WORKER)}, count = 2 }}
{steering.keys("app")}
[[group]]
name = "dns"
listen = "udp:127.0.0.1:{DNS}"
run = {{ command = {toml_list(DNS_WORKER)}, count = 2 }}
flow_affinity = true

[[group]]
name = "quic"
listen = "udp:127.0.0.1:{QUIC}"
run = {{ command = {toml_list(quic_cmd)}, count = 2 }}
quic = true
"""


# Starts argv[1:] with SIGHUP at its default, as in a terminal's session: a soak started under
# nohup ignores SIGHUP, and rpctl run and rpctl demo rightly keep a SIGHUP ignored at their start.
HUP_AT_DEFAULT = [sys.executable, "-c",
                  "import os, signal, sys; signal.signal(signal.SIGHUP, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])"]


class Logged:
    """A long-running process whose stdout and stderr go to one file, appended across starts;
    with hup_at_default, SIGHUP is at its default when it starts (HUP_AT_DEFAULT)."""

    def __init__(self, argv: list[str], log: Path, env: Optional[dict] = None, hup_at_default: bool = False):
        self.log = log
        self.offset = log.stat().st_size if log.exists() else 0
        argv = HUP_AT_DEFAULT + argv if hup_at_default else argv
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         env=env, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def text(self) -> str:
        """What it wrote since it started."""
        with open(self.log, "rb") as f:
            f.seek(self.offset)
            return f.read().decode(errors="replace")

    def wait_logged(self, want: str, timeout: float, after: int = 0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if want in self.text()[after:]:
                return True
            if self.proc.poll() is not None:
                return want in self.text()[after:]
            time.sleep(0.05)
        return False

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self, timeout: float = 15.0) -> Optional[int]:
        """SIGTERM, then SIGKILL; the exit status (None: it had to be killed)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return None
        return self.proc.returncode


class World:
    """The namespace's servers and rpctl processes (entered by the caller: fresh_netns)."""

    def __init__(self, tmp: Path, cert: str, key: str):
        self.tmp, self.cert, self.key = tmp, cert, key
        self.conf = tmp / "rpctl.toml"
        self.cache = tmp / "program-cache"
        # serve's children (the QUIC servers) import tests.support; the cache is the soak's own.
        self.env = {**child_env(), "RPCTL_PROGRAM_CACHE": str(self.cache)}
        self.steering = Steering()
        self.write_config()
        self.nginx_starts = 0
        self.nginx = self.start_nginx(2)
        self.serves: list[Logged] = []
        self.start_serve()
        self.solo: Optional[Logged] = None
        self.demo: Optional[Logged] = None

    # The file ----------------------------------------------------------------------------

    def write_config(self, text: Optional[str] = None) -> None:
        """The file as steering says (or `text`), replaced in one rename: serve never reads half of it."""
        part = self.conf.with_suffix(".part")
        part.write_text(text if text is not None else config(self.steering, self.cert, self.key))
        os.replace(part, self.conf)

    # nginx -------------------------------------------------------------------------------

    def start_nginx(self, workers: int) -> Nginx:
        self.nginx_starts += 1
        folder = self.tmp / f"nginx-{self.nginx_starts}"
        folder.mkdir()
        n = Nginx(folder, port=WEB, workers=workers, cpu_affinity=True)
        n.wait_ready(15)
        return n

    # serve -------------------------------------------------------------------------------

    @property
    def serve(self) -> Logged:
        return self.serves[-1]

    def start_serve(self, timeout: float = 60.0) -> Logged:
        s = Logged(rpctl_argv("serve", "-c", self.conf), self.tmp / "serve.log", self.env)
        self.serves.append(s)
        if not s.wait_logged("serving 4 groups", timeout):
            raise RuntimeError(f"serve did not start: {s.text()[-2000:]}")
        return s

    # The standalone launcher and the demo ----------------------------------------------------

    def start_solo(self) -> Logged:
        self.solo = Logged(rpctl_argv("run", "--group", "solo", "-n", 2, "--listen", f"127.0.0.1:{SOLO}", "--",
                                      *WORKER), self.tmp / "solo.log", self.env, hup_at_default=True)
        return self.solo

    def start_demo(self) -> Logged:
        self.demo = Logged(rpctl_argv("demo", "--keep", "--port", DEMO, "--workers", 2, "--step-seconds", 1),
                           self.tmp / "demo.log", self.env, hup_at_default=True)
        return self.demo

    def stop(self) -> None:
        for p in [self.solo, self.demo, *self.serves]:
            if p is not None:
                p.stop()
        self.nginx.stop()


# serve's resources, from /proc -------------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def resources(pid: int) -> Optional[dict]:
    """RSS (KiB), open fds, threads and CPU seconds (user + system) of a process, or None if it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {
        "rss_kib": int(fields["VmRSS"].split()[0]),
        "fds": fds,
        "threads": int(fields["Threads"]),
        "cpu_s": (int(stat[11]) + int(stat[12])) / CLOCK_TICKS,
        "fd_kinds": fd_kinds(pid),
    }


def fd_kinds(pid: int) -> dict[str, int]:
    """A process's open fds by what they are: socket, pipe, anon_inode:bpf-map, anon_inode:[pidfd], a path..."""
    kinds: dict[str, int] = {}
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            kind = target.split(":[", 1)[0] if ":[" in target else target
            kinds[kind] = kinds.get(kind, 0) + 1
    except OSError:
        pass
    return kinds


# What the kernel and bpffs hold --------------------------------------------------------------


def bpftool(*args: str) -> list | dict:
    out = subprocess.run(["bpftool", "-j", *args], capture_output=True, text=True, timeout=30)
    return json.loads(out.stdout) if out.returncode == 0 and out.stdout.strip() else []


def bpf_ids(kind: str) -> set[int]:
    """Every program ("prog") or map ("map") id on the system."""
    return {o["id"] for o in bpftool(kind, "list")}


def program_maps(prog_id: int) -> set[int]:
    """The ids of the maps a program uses (empty if it is gone)."""
    info = bpftool("prog", "show", "id", str(prog_id))
    return set(info.get("map_ids", [])) if isinstance(info, dict) else set()


def shared_holdings(root: Path) -> tuple[set[int], set[int]]:
    """What the shared programs in bpffs (root/shared-*) hold by design while any group of any
    namespace uses them: (the maps in their slots and their own, the programs of their slots'
    groups).  A group's slot maps stay for the next group that takes the slot."""
    maps: set[int] = set()
    owners: set[int] = set()
    for folder in root.glob("shared-*"):
        for pinned in folder.iterdir():
            info = bpftool("map", "show", "pinned", str(pinned))
            if isinstance(info, dict) and "id" in info:
                maps.add(info["id"])
            if pinned.name.startswith("of_") or pinned.name == "owners":
                ids = {int.from_bytes(bytes(int(b, 16) for b in e["value"]), "little")
                       for e in bpftool("map", "dump", "pinned", str(pinned)) if "value" in e}
                (owners if pinned.name == "owners" else maps).update(ids - {0})
        prog = bpftool("prog", "show", "pinned", str(folder / "prog"))
        if isinstance(prog, dict):
            maps.update(prog.get("map_ids", []))
    return maps, owners
