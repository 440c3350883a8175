"""The soak's faults: one every 2 to 5 s, drawn from a seeded mix (MIX), each
noted with when it started, what it did and whether it did it.

A fault's `lossy` says which failures it causes by definition, so that the
tally counts them apart and never as failures of rpctl: a SIGKILLed worker
takes the connections it had accepted (and a UDP worker its flows: they move
to its replacement).  A SIGKILLed serve loses nothing by definition: the
children of its `run` groups outlive it and the next serve takes them back,
so every failure in its window counts, and each SIGKILL of serve notes which
of those children it kept (the same pid before the kill and once the next
serve is up) and which it lost.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from bench._soak_world import DEMO, RUN_GROUPS, SOLO, World, rpctl_argv
from tests.support.launched import alive

MIN_WORKERS, MAX_WORKERS = 2, 4
# What rpctl rightly refuses (exit 4) when the file has drained the other member of app.
UNSAFE = ("no other live member would serve", "is the last live member")


@dataclass
class Fault:
    t: float                    # time.monotonic() at its start
    kind: str
    detail: str = ""
    took: float = 0.0
    error: str = ""             # what did not work (a finding to look at), "" if all did
    refused: str = ""           # what rpctl refused as unsafe, as it should (the last live member, ...)
    lossy: dict = field(default_factory=dict)   # group -> why its failures in this window are by definition
    kept: int = 0               # SIGKILL serve: the run groups' workers the next serve took back (same pid)
    lost: list = field(default_factory=list)    # SIGKILL serve: those it did not, "group name pid -> pid"


def rpctl(*args: object, timeout: float = 60.0, env: Optional[dict] = None) -> subprocess.CompletedProcess:
    return subprocess.run(rpctl_argv(*args), capture_output=True, text=True, timeout=timeout, env=env)


def status(world: World) -> dict:
    """The groups of the namespace by name (status --json)."""
    out = rpctl("status", "--json", env=world.env)
    if out.returncode != 0:
        raise RuntimeError(f"rpctl status --json exited {out.returncode}: {out.stderr.strip()}")
    return {g["name"]: g for g in json.loads(out.stdout)["groups"]}


def live_members(world: World, group: str) -> list[dict]:
    return [m for m in status(world)[group]["members"] if m["state"] in ("active", "throttled", "draining")]


def run_workers(world: World) -> dict[tuple[str, str], int]:
    """The run groups' members whose process runs now (a stopped one too), by (group, name): their pids.
    A member whose child died and waits for its restart is left out: serve's SIGKILL did not lose it."""
    groups = status(world)
    return {(g, m["name"]): m["pid"] for g in RUN_GROUPS if g in groups
            for m in groups[g]["members"] if m.get("pid") and alive(m["pid"])}


class Faults:
    """The mix, drawn from random.Random(seed); run() injects until `until` (time.monotonic())."""

    def __init__(self, world: World, seed: int):
        self.world = world
        self.rng = random.Random(seed)
        self.done: list[Fault] = []
        self.timers: list[threading.Timer] = []
        self.mix: dict[str, tuple[float, Callable[[Fault], None]]] = {
            "nginx reload up": (1, self.nginx_up),
            "nginx reload down": (1, self.nginx_down),
            "nginx reload same": (1, self.nginx_same),
            "nginx restart": (0.5, self.nginx_restart),
            "SIGKILL serve": (0.7, self.kill_serve),
            "SIGKILL worker": (1, self.kill_worker),
            "SIGSTOP worker": (1, self.stop_worker),
            "file weights": (1, self.file_weights),
            "file drain": (1, self.file_drain),
            "file pin": (0.5, self.file_pin),
            "file with an error": (1, self.bad_file),
            "CLI weights": (1, self.cli_weights),
            "CLI drain": (1, self.cli_drain),
            "CLI pin": (0.5, self.cli_pin),
            "rolling restart": (0.5, self.rolling_restart),
            "program cache removed": (0.5, self.cache_removed),
            "rpctl run signalled": (1, self.signal_solo),
            "rpctl demo signalled": (0.5, self.signal_demo),
        }

    # The loop ----------------------------------------------------------------------------

    def run(self, until: float, stopping: threading.Event, serve_kills_until: float) -> None:
        """Inject until `until`; SIGKILL of serve only until `serve_kills_until`, so that the
        last serve lives long enough to show whether its RSS or fds grow under the others."""
        kinds = list(self.mix)
        weights = [self.mix[k][0] for k in kinds]
        late = [w if k != "SIGKILL serve" else 0 for k, w in zip(kinds, weights)]
        next_at = time.monotonic() + self.rng.uniform(2, 5)
        while not stopping.is_set():
            wait = next_at - time.monotonic()
            if wait > 0 and stopping.wait(wait):
                break
            if time.monotonic() >= until:
                break
            kind = self.rng.choices(kinds, weights if time.monotonic() < serve_kills_until else late)[0]
            f = Fault(time.monotonic(), kind)
            self.done.append(f)
            try:
                self.mix[kind][1](f)
            except Exception as e:  # noqa: BLE001 (any failure of an injected step is a finding, noted)
                f.error = f"{type(e).__name__}: {e}"
            f.took = time.monotonic() - f.t
            next_at = f.t + self.rng.uniform(2, 5)

    def finish(self) -> None:
        for t in self.timers:
            t.join()

    # nginx -------------------------------------------------------------------------------

    def _reload(self, f: Fault, workers: int) -> None:
        n = self.world.nginx
        f.detail = f"{n.workers} -> {workers} workers"
        n.reload(workers, timeout=20)

    def nginx_up(self, f: Fault) -> None:
        self._reload(f, min(MAX_WORKERS, self.world.nginx.workers + 1))

    def nginx_down(self, f: Fault) -> None:
        self._reload(f, max(MIN_WORKERS, self.world.nginx.workers - 1))

    def nginx_same(self, f: Fault) -> None:
        self._reload(f, self.world.nginx.workers)

    def nginx_restart(self, f: Fault) -> None:
        """A new nginx beside the old one, then the old one stopped (SIGQUIT: graceful)."""
        old = self.world.nginx
        self.world.nginx = self.world.start_nginx(self.rng.randint(MIN_WORKERS, MAX_WORKERS))
        old.stop()
        f.detail = f"master {old.master} -> {self.world.nginx.master}"

    # serve -------------------------------------------------------------------------------

    def kill_serve(self, f: Fault) -> None:
        """SIGKILL serve, start the next: the run groups' workers serve on through it (nothing
        is lost by definition), and the next serve takes the same processes back."""
        old = self.world.serve
        before = run_workers(self.world)
        old.signal(signal.SIGKILL)
        old.proc.wait(10)
        new = self.world.start_serve()
        f.detail = f"serve {old.pid} -> {new.pid}"
        after = run_workers(self.world)
        f.kept = sum(after.get(k) == pid for k, pid in before.items())
        f.lost = [f"{g} {name} pid {pid} -> {after.get((g, name), 'none')}"
                  for (g, name), pid in sorted(before.items()) if after.get((g, name)) != pid]

    # Workers -----------------------------------------------------------------------------

    def _victim(self, f: Fault) -> tuple[str, dict]:
        group = self.rng.choice(["web", "app", "dns", "quic"])
        member = self.rng.choice(live_members(self.world, group))
        f.detail = f"{group} {member['name']} pid {member['pid']}"
        return group, member

    def kill_worker(self, f: Fault) -> None:
        group, member = self._victim(f)
        pid = member["pid"]
        if group == "web":
            pid = self.rng.choice(self.world.nginx.workers_now())  # a member's pid may lag a reload
            f.detail = f"web nginx worker pid {pid}"
        f.lossy = {group: "a killed worker's accepted connections (UDP: flows, QUIC: connections) die with it"}
        os.kill(pid, signal.SIGKILL)

    def stop_worker(self, f: Fault) -> None:
        group, member = self._victim(f)
        pid = member["pid"]
        if group == "web":
            pid = self.rng.choice(self.world.nginx.workers_now())
            f.detail = f"web nginx worker pid {pid}"
        seconds = self.rng.uniform(1.0, 3.0)
        f.detail += f" for {seconds:.1f} s"
        os.kill(pid, signal.SIGSTOP)
        timer = threading.Timer(seconds, lambda: _cont(pid))
        timer.start()
        self.timers.append(timer)

    # The file ----------------------------------------------------------------------------

    def _hup(self) -> None:
        self.world.write_config()
        self.world.serve.signal(signal.SIGHUP)

    def _names(self, group: str) -> list[str]:
        return sorted(m["name"] for m in live_members(self.world, group))

    def file_weights(self, f: Fault) -> None:
        group = self.rng.choice(["web", "app"])
        weights = {n: self.rng.randint(1, 4) for n in self._names(group)}
        self.world.steering.weights[group] = weights
        f.detail = f"{group} {weights}"
        self._hup()

    def file_drain(self, f: Fault) -> None:
        group = self.rng.choice(["web", "app"])
        drained = self.world.steering.drain
        if drained.get(group):
            f.detail = f"{group}: undrain {drained.pop(group)}"
        else:
            drained[group] = [self.rng.choice(self._names(group))]
            f.detail = f"{group}: drain {drained[group]}"
        self._hup()

    def file_pin(self, f: Fault) -> None:
        s = self.world.steering
        s.pin = None if s.pin else "cpu"
        f.detail = f"web pin {s.pin or 'weighted'}"
        self._hup()

    def bad_file(self, f: Fault) -> None:
        """A file with an error, sent with SIGHUP: serve must say so and keep the last good state."""
        before = _steering_state(status(self.world))
        serve = self.world.serve
        mark = len(serve.text())
        good = self.world.conf.read_text()
        error = self.rng.choice([
            ("an unknown key", good.replace('adaptive = true', 'adaptive = true\nweigth = 3', 1)),
            ("a weight out of range", good.replace('name = "app"', 'name = "app"\nweight = 100000', 1)),
            ("a TOML syntax error", good.replace('[[group]]\nname = "dns"', '[[group]\nname = "dns"', 1)),
            ("a duplicate name", good.replace('name = "dns"', 'name = "app"', 1)),
            ("a truncated file", good[: len(good) // 2]),
        ])
        f.detail = error[0]
        self.world.write_config(error[1])
        serve.signal(signal.SIGHUP)
        try:
            if not serve.wait_logged("the last good one stays in force", 10, after=mark):
                f.error = f"serve did not refuse the file: {serve.text()[mark:][-500:]!r}"
            after = _steering_state(status(self.world))
            if after != before:
                f.error = f"state changed after a refused file: {before} -> {after}"
        finally:
            self.world.write_config(good)  # a serve started later reads the good file

    # The CLI -----------------------------------------------------------------------------

    def _cli(self, f: Fault, *args: object) -> bool:
        """rpctl ARGS; a refusal to leave a group with no live member is right (noted in f.refused),
        any other failure a finding (f.error).  Whether it did it."""
        out = rpctl(*args, env=self.world.env)
        if out.returncode == 0:
            return True
        text = f"rpctl {' '.join(map(str, args))} exited {out.returncode}: {out.stderr.strip()}"
        if out.returncode == 4 and any(why in out.stderr for why in UNSAFE):
            f.refused = text
        else:
            f.error = text
        return False

    def cli_weights(self, f: Fault) -> None:
        group = self.rng.choice(["web", "app"])
        pairs = [f"{n}={self.rng.randint(1, 4)}" for n in self._names(group)]
        f.detail = f"{group} {' '.join(pairs)}"
        self._cli(f, "weights", *pairs, "--group", group)

    def cli_drain(self, f: Fault) -> None:
        group = self.rng.choice(["web", "app"])
        name = self.rng.choice(self._names(group))
        f.detail = f"{group} drain {name}, undrain after 1 s"
        if self._cli(f, "drain", name, "--group", group):
            time.sleep(1)
            self._cli(f, "undrain", name, "--group", group)

    def cli_pin(self, f: Fault) -> None:
        mode = status(self.world)["app"]["mode"]
        if mode == "weighted":
            f.detail = "app pin cpu --map worker-1=0,worker-2=1"
            self._cli(f, "pin", "cpu", "--map", "worker-1=0,worker-2=1", "--group", "app")
        else:
            f.detail = "app pin off"
            self._cli(f, "pin", "off", "--group", "app")

    def rolling_restart(self, f: Fault) -> None:
        f.detail = "app worker-1 then worker-2"
        for name in ("worker-1", "worker-2"):
            if not self._cli(f, "restart", name, "--group", "app"):
                return

    def cache_removed(self, f: Fault) -> None:
        f.detail = str(self.world.cache)
        shutil.rmtree(self.world.cache, ignore_errors=True)

    # rpctl run and rpctl demo, beside serve ----------------------------------------------------

    def _signal_again(self, f: Fault, what: str, current, start, port: int) -> None:
        sig = self.rng.choice([signal.SIGHUP, signal.SIGTERM, signal.SIGKILL])
        f.detail = f"{what}: {sig.name}, then a new one on port {port}"
        if current is not None:
            current.signal(sig)
            try:
                current.proc.wait(15)
            except subprocess.TimeoutExpired:
                f.error = f"{what} still runs 15 s after {sig.name}"
                current.proc.kill()
                current.proc.wait()
            _wait_gone(port)
        new = start()
        if not _serves(port, 30):
            f.error = (f.error + "; " if f.error else "") + \
                f"a new {what} on port {port} after {sig.name} did not serve: {new.text()[-400:]!r}"

    def signal_solo(self, f: Fault) -> None:
        self._signal_again(f, "rpctl run", self.world.solo, self.world.start_solo, SOLO)

    def signal_demo(self, f: Fault) -> None:
        self._signal_again(f, "rpctl demo", self.world.demo, self.world.start_demo, DEMO)


def _cont(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGCONT)
    except ProcessLookupError:
        pass


def _steering_state(groups: dict) -> dict:
    """What a refused file must leave as it was: each member's weight and state, each group's mode."""
    return {name: (g["mode"], sorted((m["name"], m["weight"], m["state"] == "draining") for m in g["members"]))
            for name, g in groups.items() if name in ("web", "app", "dns", "quic")}


def _serves(port: int, timeout: float) -> bool:
    """Whether 127.0.0.1:port answers an HTTP request within timeout seconds."""
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.sendall(b"GET / HTTP/1.0\r\n\r\n")
                if s.recv(64).startswith(b"HTTP/1."):
                    return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def _wait_gone(port: int, timeout: float = 5.0) -> None:
    """Until nothing answers on the port (the killed launcher's children are gone too)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _serves(port, 0.01):
        time.sleep(0.1)

