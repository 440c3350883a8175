"""The README's examples: read from its fenced blocks, and run as written.

Every ```sh block of README.md is an example: each of its command lines is
run, as a user would type it, by bash.  The HTML comment right above a block
says what it is run with:

    <!-- example: world workers: what the world is, for a reader;
         skip "rpctl pin cpu", "rpctl pin rss --dev eth0": why a test machine cannot run these;
         until-stopped "rpctl serve" -->

Directives, separated by `;`:
  world NAME[: text]         what the block is run with (WORLDS below; default empty)
  skip: reason               the whole block is not run
  skip "CMD", ...: reason    these commands (a line without its comment) are not run
  until-stopped "CMD", ...   these run in the background until the block's end, then get SIGTERM
  file PATH                  a ```toml block: its text is that file
  then "CMD", ...            the commands run once the file is written

A block runs inside a PID namespace of its own (so that a worker can have
the pid the README gives it: 4242) and a mount namespace whose /etc is an
overlay (so that /etc/rpctl/rpctl.toml is the example's, or the package's
all-commented one), in the caller's network namespace:

    unshare --pid --fork --mount-proc --propagation slave python -m tests.support.readme_examples SPEC.json

prints the outcome of every command as JSON on stdout.  `rpctl` on the
commands' PATH is this checkout's; `python3` stays the system's.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
PACKAGE_CONFIG = REPO / "contrib" / "rpctl.toml"  # /etc/rpctl/rpctl.toml as the package installs it
COMMAND_TIMEOUT = 60.0
READY_TIMEOUT = 15.0

WORLDS = {
    "empty": "nothing but loopback",
    "workers": "three TCP demo workers, pids 4242-4244, on 127.0.0.1:8080 (fd 3)",
    "udp-workers": "UDP demo workers: pid 4242 on :5353, 4343 and 4344 on :27015, 4444 on :5354 (fd 3)",
    "nginx": "nginx, two workers pinned to CPUs 0 and 1, on 127.0.0.1:8080",
}

_BLOCK = re.compile(r"^```(\w*)\n(.*?)^```\s*$", re.S | re.M)
_MARKER = re.compile(r"<!--\s*example:((?:(?!<!--).)*?)-->\s*\Z", re.S)
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
_COMMENT = re.compile(r"\s+#(\s.*)?$")


@dataclass
class Example:
    """One fenced block of the README and what its marker says."""

    line: int                     # the README line of its opening fence
    lang: str
    text: str
    world: str = "empty"
    skip: Optional[str] = None    # why the whole block is not run
    skip_commands: dict[str, str] = field(default_factory=dict)  # command -> why it is not run
    until_stopped: list[str] = field(default_factory=list)
    file: Optional[str] = None
    then: list[str] = field(default_factory=list)

    def commands(self) -> list[str]:
        """The command lines of an sh block (comments and blank lines left out)."""
        if self.lang != "sh":
            return []
        return [line for line in self.text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def command_of(line: str) -> str:
    """A command line without its trailing comment, as markers name it."""
    return _COMMENT.sub("", line).strip()


def _directives(marker: str, ex: Example) -> None:
    for part in (p.strip() for p in marker.split(";")):
        if not part:
            continue
        word = part.split(None, 1)[0].rstrip(":")
        quoted = _QUOTED.findall(part)
        if word == "world":
            ex.world = part.split(None, 1)[1].split(":", 1)[0].strip()
            if ex.world not in WORLDS:
                raise ValueError(f"README.md:{ex.line}: no world {ex.world!r} (one of {', '.join(WORLDS)})")
        elif part.startswith("skip:"):
            ex.skip = part.split(":", 1)[1].strip()
        elif word == "skip":
            for cmd in quoted:
                ex.skip_commands[cmd] = part.rsplit('":', 1)[1].strip()
        elif word == "until-stopped":
            ex.until_stopped += quoted
        elif word == "file":
            ex.file = part.split(None, 1)[1].strip()
        elif word == "then":
            ex.then += quoted
        else:
            raise ValueError(f"README.md:{ex.line}: unknown directive {part!r}")


def read_examples(text: str) -> list[Example]:
    """Every ```sh block, and every block a marker makes a file; markers checked against their block."""
    out = []
    for m in _BLOCK.finditer(text):
        before = text[: m.start()]
        ex = Example(line=before.count("\n") + 1, lang=m.group(1), text=m.group(2))
        marker = _MARKER.search(before[-2000:])
        if marker:
            _directives(marker.group(1), ex)
        if ex.lang != "sh" and ex.file is None:
            continue
        commands = {command_of(c) for c in ex.commands()}
        stale = [c for c in [*ex.skip_commands, *ex.until_stopped] if c not in commands]
        if stale:
            raise ValueError(f"README.md:{ex.line}: the marker names commands the block does not have: {stale}")
        out.append(ex)
    return out


# Run one block (inside its PID and mount namespaces) --------------------------------------------


@dataclass
class Outcome:
    command: str
    status: Optional[int] = None     # exit status; None: not run
    skipped: Optional[str] = None    # why it was not run
    stdout: str = ""
    stderr: str = ""
    background: bool = False


def _shell(line: str, env: dict, **kw) -> subprocess.Popen:
    return subprocess.Popen(["bash", "-c", line], cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _overlay_etc(tmp: Path, config_text: str) -> None:
    """/etc as an overlay whose rpctl/rpctl.toml is `config_text`: the machine's /etc is not touched."""
    upper, work = tmp / "etc-upper", tmp / "etc-work"
    (upper / "rpctl").mkdir(parents=True)
    work.mkdir()
    (upper / "rpctl" / "rpctl.toml").write_text(config_text)
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir=/etc,upperdir={upper},workdir={work}", "/etc"], check=True)


def _rpctl_on_path(tmp: Path) -> dict:
    """The commands' environment: this checkout's rpctl first on PATH, nothing else of its virtualenv."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    (bin_dir / "rpctl").symlink_to(Path(sys.executable).with_name("rpctl"))
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env["PATH"] = f"{bin_dir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    return env


def _with_pid(pid: int, argv: list[str], env: dict, sock) -> subprocess.Popen:
    """argv started as process `pid` of this PID namespace, `sock` its fd 3 (socket activation)."""
    with open("/proc/sys/kernel/ns_last_pid", "w") as f:
        f.write(str(pid - 1))
    child_env = dict(env, LISTEN_FDS="1", LISTEN_PID=str(pid))
    fd = fcntl.fcntl(sock.fileno(), fcntl.F_DUPFD_CLOEXEC, 10)  # above 3, which the child's bash makes it
    try:
        proc = subprocess.Popen(["bash", "-c", f'exec 3<&{fd} {fd}<&-; exec "$@"', "bash", *argv], env=child_env,
                                pass_fds=(fd,), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    finally:
        os.close(fd)
    if proc.pid != pid:
        raise RuntimeError(f"wanted pid {pid}, got {proc.pid}: something else forked in this PID namespace")
    return proc


def _world(name: str, tmp: Path, env: dict) -> list:
    """Start the world a block runs with; returns what to stop afterwards."""
    from rpctl.cli.demo import worker
    from rpctl.controller.kernel.sockets import reuseport_socket

    started: list = []
    specs = {
        "workers": [(4242, "tcp", 8080), (4243, "tcp", 8080), (4244, "tcp", 8080)],
        "udp-workers": [(4242, "udp", 5353), (4343, "udp", 27015), (4344, "udp", 27015), (4444, "udp", 5354)],
    }.get(name, [])
    for i, (pid, proto, port) in enumerate(specs, 1):
        sock = reuseport_socket(proto, "127.0.0.1", port)
        try:
            proc = _with_pid(pid, ["rpctl", "demo-worker", "--name", f"w{i}"], env, sock)
        finally:
            sock.close()  # the worker's fd 3 is the only one left: its listener dies with it
        started.append(proc)
        worker.wait_ready(proc)
    if name == "nginx":
        from tests.support.nginx import Nginx

        (tmp / "nginx").mkdir()
        ngx = Nginx(tmp / "nginx", 8080, workers=2, cpu_affinity=True)
        ngx.wait_ready()
        started.append(ngx)
    return started


def _status(env: dict) -> str:
    done = subprocess.run(["rpctl", "status", "--json"], env=env, capture_output=True, text=True, check=False)
    return done.stdout


def _wait_started(proc: subprocess.Popen, err_path: Path, env: dict) -> Optional[str]:
    """Until a background command said something and the groups stopped changing; why not, if it did not."""
    deadline = time.monotonic() + READY_TIMEOUT
    while not err_path.read_text():
        if proc.poll() is not None:
            return f"exited {proc.returncode} before it said anything"
        if time.monotonic() > deadline:
            return f"said nothing within {READY_TIMEOUT:g} s"
        time.sleep(0.05)
    seen = [_status(env)]
    while len(seen) < 3 or len(set(seen[-3:])) > 1:
        if proc.poll() is not None:
            return f"exited {proc.returncode}: {err_path.read_text()[-500:]}"
        if time.monotonic() > deadline:
            break  # a group that keeps changing (counters) is no failure of the command
        time.sleep(0.3)
        seen.append(_status(env))
    return None


def run_example(ex: Example) -> list[Outcome]:
    """Run one example's commands (in the namespaces the caller made for it)."""
    tmp = Path(tempfile.mkdtemp(prefix="rpctl-readme-"))
    config = ex.text if ex.file == "/etc/rpctl/rpctl.toml" else PACKAGE_CONFIG.read_text()
    _overlay_etc(tmp, config)
    env = _rpctl_on_path(tmp)
    world = _world(ex.world, tmp, env)
    background: list[tuple[Outcome, subprocess.Popen, Path]] = []
    outcomes: list[Outcome] = []
    try:
        for line in ex.commands() + ex.then:
            cmd = command_of(line)
            out = Outcome(line)
            outcomes.append(out)
            if cmd in ex.skip_commands:
                out.skipped = ex.skip_commands[cmd]
            elif cmd in ex.until_stopped:
                out.background = True
                err_path = tmp / f"background-{len(background)}.err"
                with open(err_path, "w") as err:
                    proc = subprocess.Popen(["bash", "-c", line], cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                                            stdout=subprocess.DEVNULL, stderr=err, text=True)
                background.append((out, proc, err_path))
                problem = _wait_started(proc, err_path, env)
                if problem:
                    out.status, out.stderr = proc.poll() if proc.poll() is not None else -1, problem
            else:
                proc = _shell(line, env)
                try:
                    out.stdout, out.stderr = proc.communicate(timeout=COMMAND_TIMEOUT)
                    out.status = proc.returncode
                except subprocess.TimeoutExpired:
                    proc.kill()
                    out.stdout, out.stderr = proc.communicate()
                    out.status, out.stderr = -1, out.stderr + f"\n(no end within {COMMAND_TIMEOUT:g} s: killed)"
    finally:
        for out, proc, err_path in reversed(background):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if out.status is None:
                out.status = proc.returncode
            out.stderr = (out.stderr + "\n" + err_path.read_text()).strip()
        _stop(world)
        shutil.rmtree(tmp, ignore_errors=True)
    return outcomes


def _stop(world: list) -> None:
    from tests.support.netns import unload_all

    unload_all()
    for thing in world:
        if isinstance(thing, subprocess.Popen):
            thing.terminate()
            try:
                thing.wait(5)
            except subprocess.TimeoutExpired:
                thing.kill()
        else:
            thing.stop()


def run_in_namespaces(ex: Example, timeout: float = 300.0) -> list[Outcome]:
    """run_example(ex) in a PID and mount namespace of its own (this process's network namespace)."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(asdict(ex), f)
    try:
        done = subprocess.run(
            # Slave mounts: /etc's overlay stays in here, and the namespaces `ip netns add` pins
            # elsewhere meanwhile are seen (serve and cleanup keep the state of namespaces they see).
            ["unshare", "--pid", "--fork", "--mount-proc", "--propagation", "slave", sys.executable, "-m",
             "tests.support.readme_examples", f.name],
            cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False,
        )
    finally:
        os.unlink(f.name)
    if done.returncode != 0:
        raise RuntimeError(f"README.md:{ex.line}: the example's runner failed ({done.returncode}): "
                           f"{done.stderr[-3000:]}")
    return [Outcome(**o) for o in json.loads(done.stdout)]


def main(argv: list[str]) -> int:
    ex = Example(**json.loads(Path(argv[0]).read_text()))
    outcomes = run_example(ex)
    json.dump([asdict(o) for o in outcomes], sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
