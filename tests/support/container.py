"""A Debian 12 machine with systemd as PID 1, in a container on this host, for the
tests that install the package and run it as a service.

The root: `debootstrap --variant=minbase bookworm` with systemd, dbus, nginx-light
and every package the .deb depends on or recommends, so that `apt install` of the
.deb inside needs no network.  Built once (about a minute, from the Debian mirror
apt uses here) and kept under CACHE, keyed by its package list: a new dependency
of the package makes a new root.  Built in a scratch folder and renamed into place,
under a lock: a build killed halfway leaves nothing that looks finished.

A boot: a throwaway overlayfs over the cached root (set up in milliseconds; the
root itself is never written), `systemd-nspawn --boot` with what an eBPF agent
needs inside (found the hard way, see the design notes):

- --capability=all, and the system calls nspawn filters by default that rpctl
  and bcc use (bpf, pidfd_getfd, perf_event_open): without them they fail with
  EPERM whatever the capabilities;
- a bpffs of its own, mounted on the host and bound to /sys/fs/bpf (nspawn's
  /sys has none), a new one at each boot: a reboot loses the pinned state, as a
  real host's does;
- --private-network: the container's ports and groups are its own, only
  loopback; the host's are out of its reach;
- a cgroup of its own (containers started from one cgroup share nspawn's
  `payload/` and their units fail with 219/CGROUP);
- --register=no --keep-unit: no machined on this host.

Commands run inside through nsenter into every namespace of the container's
PID 1, with a clean environment.  Files are written from inside too (never
through the overlay from the host: an absolute symlink in the root would lead
a host-side write to the host's own file).
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterable, Optional

CACHE = Path("/var/cache/rpctl-test-roots")
SUITE = "bookworm"
# What every test machine has besides the package's dependencies: an init, its
# bus, the server rpctl adopts, and the tools the tests look with.
BASE_PACKAGES = ("systemd", "systemd-sysv", "dbus", "nginx-light", "iproute2", "procps")
ROOT_FORMAT = 1  # raise it when the way a root is made changes: older roots are then built anew
# System calls nspawn's filter refuses by default and rpctl (or bcc) makes.
SYSCALLS = ("bpf", "pidfd_getfd", "perf_event_open")
ENV = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C.UTF-8",
       "TERM=dumb", "SYSTEMD_COLORS=0", "SYSTEMD_PAGER=cat", "DEBIAN_FRONTEND=noninteractive")
TOOLS = {"debootstrap": "debootstrap", "systemd-nspawn": "systemd-container", "nsenter": "util-linux",
         "dpkg-deb": "dpkg"}


class ContainerError(Exception):
    """What stops a container test, in one line that says what to do."""


# The host -------------------------------------------------------------------------


def check_host() -> None:
    """Everything a boot needs from this host, or ContainerError naming what is missing."""
    if os.geteuid() != 0:
        raise ContainerError("containers need root (run ./scripts/test.sh as root)")
    missing = [f"{tool} (apt-get install {package})" for tool, package in TOOLS.items() if shutil.which(tool) is None]
    if missing:
        raise ContainerError(f"missing {', '.join(missing)}: ./scripts/provision.sh --with-tests installs them")
    filesystems = Path("/proc/filesystems").read_text()
    for fs, what in (("overlay", "overlayfs (modprobe overlay)"), ("bpf", "bpffs")):
        if not re.search(rf"\s{fs}$", filesystems, re.M):
            raise ContainerError(f"this kernel has no {what}")
    if not _cgroup_mounts():
        raise ContainerError("no cgroup2 hierarchy is mounted (systemd in a container needs one)")


def debian_mirror(sources: Iterable[Path] = ()) -> str:
    """The Debian mirror apt uses here for SUITE (its deb822 .sources or one-line .list files)."""
    files = list(sources) or sorted(Path("/etc/apt/sources.list.d").glob("*.sources")) + sorted(
        Path("/etc/apt/sources.list.d").glob("*.list")) + [Path("/etc/apt/sources.list")]
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        for stanza in re.split(r"\n\s*\n", text):
            fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", stanza, re.M))
            if SUITE in fields.get("Suites", "").split() and "Types" in fields and "deb" in fields["Types"].split():
                return fields["URIs"].split()[0]
        for m in re.finditer(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)\s", text, re.M):
            if m.group(2) == SUITE:
                return m.group(1)
    raise ContainerError(f"no Debian mirror for {SUITE} in apt's sources (/etc/apt/sources.list.d)")


def package_fields(deb: Path) -> dict[str, str]:
    """Depends and Recommends of a .deb."""
    out = {}
    for field in ("Depends", "Recommends"):
        r = subprocess.run(["dpkg-deb", "--field", str(deb), field], capture_output=True, text=True, check=True)
        out[field] = r.stdout.strip()
    return out


def root_packages(fields: dict[str, str], arch: Optional[str] = None) -> list[str]:
    """The packages a root gets so that a .deb of these Depends and Recommends installs
    with no download: BASE_PACKAGES and, for each relation, a package that meets it
    (one named already, else the one of this (dpkg) architecture, else the first)."""
    arch = arch or subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                                  check=True).stdout.strip()
    chosen = list(BASE_PACKAGES)
    groups = []
    for field in ("Depends", "Recommends"):
        for relation in fields.get(field, "").split(","):
            names = [re.sub(r"[\s(].*$", "", alt.strip()).split(":")[0] for alt in relation.split("|")]
            names = [n for n in names if n and not n.startswith("$")]
            if names:
                groups.append(names)
    for names in sorted(groups, key=len):  # plain relations first: they settle most alternatives
        if any(n in chosen for n in names):
            continue
        chosen.append(next((n for n in names if n.endswith(f"-{arch}")), names[0]))
    return sorted(set(chosen))


# The cached root ------------------------------------------------------------------


def cached_root(packages: list[str], log=print) -> Path:
    """The root of `packages`, built first when it is not in CACHE."""
    key = hashlib.sha256(f"{ROOT_FORMAT} {SUITE} {' '.join(sorted(packages))}".encode()).hexdigest()[:16]
    folder = CACHE / key
    root = folder / "root"
    if (folder / "packages").exists():
        return root
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test run may be building it right now
        if (folder / "packages").exists():
            return root
        mirror = debian_mirror()
        log(f"building the {SUITE} root {key} (debootstrap from {mirror}, once): {' '.join(packages)}")
        scratch = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=CACHE))
        started = time.monotonic()
        try:
            r = subprocess.run(
                ["debootstrap", "--variant=minbase", f"--include={','.join(packages)}", SUITE,
                 str(scratch / "root"), mirror],
                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=1800,
            )
            if r.returncode != 0:
                tail = "\n".join((r.stdout + r.stderr).splitlines()[-15:])
                raise ContainerError(f"debootstrap of the test root failed ({r.returncode}):\n{tail}")
            _prepare(scratch / "root")
            (scratch / "packages").write_text("\n".join(packages) + "\n")
            shutil.rmtree(folder, ignore_errors=True)
            os.rename(scratch, folder)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        log(f"built the root {key} in {time.monotonic() - started:.0f} s")
    return root


def _prepare(root: Path) -> None:
    """What a booted test machine should not spend time on: apt's timers, an empty
    machine-id to fill (nspawn gives one), a first-boot wizard."""
    for unit in ("apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_all.timer", "fstrim.timer"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(root / "etc/systemd/system/timers.target.wants" / unit)
    (root / "etc/machine-id").write_text("")


# A booted container ---------------------------------------------------------------


def _cgroup_mounts() -> list[str]:
    """The cgroup hierarchies a process of the host is placed in: cgroup2, and v1's
    name=systemd when the host runs the hybrid layout."""
    out = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _, where, fstype, options = line.split()[:4]
        if fstype == "cgroup2" or (fstype == "cgroup" and "name=systemd" in options.split(",")):
            out.append(where)
    return out


def _rmdir_tree(path: str, timeout: float = 10.0) -> None:
    """Kill whatever still runs in a cgroup (a machine whose nspawn was killed runs on:
    its PID 1 is reparented, not killed), then remove the cgroup and its children,
    deepest first (cgroups are removed with rmdir only), once they are empty."""
    if os.path.exists(os.path.join(path, "cgroup.kill")):
        with contextlib.suppress(OSError):
            Path(path, "cgroup.kill").write_text("1")
    else:
        for procs in glob.glob(os.path.join(path, "**", "cgroup.procs"), recursive=True):
            with contextlib.suppress(OSError, ValueError):
                for pid in Path(procs).read_text().split():
                    os.kill(int(pid), signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while os.path.exists(path):
        for dirpath, _, _ in sorted(os.walk(path), key=lambda w: -w[0].count("/")):
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)
        if time.monotonic() > deadline:
            return
        time.sleep(0.05)


NAME_PREFIX = "rpctl-test-"  # a machine's name: NAME_PREFIX<pid of the test process>-<n>
SCRATCH = Path("/var/tmp")   # its overlay, bpffs and console logs: SCRATCH/<name>.<random>
_made = iter(range(1, 1 << 30))


def sweep_leftovers() -> None:
    """Remove what machines of test runs that died (SIGKILL) left: their nspawn, mounts,
    cgroups and folders.  Those of a running test process are left alone."""
    for folder in SCRATCH.glob(f"{NAME_PREFIX}*-*.*"):
        name = folder.name.split(".")[0]
        pid = int(name[len(NAME_PREFIX):].split("-")[0])
        if Path(f"/proc/{pid}").exists():
            continue
        for cmdline in glob.glob("/proc/[0-9]*/cmdline"):
            with contextlib.suppress(OSError, ValueError):
                if f"--machine={name}".encode() in Path(cmdline).read_bytes().split(b"\0"):
                    os.kill(int(cmdline.split("/")[2]), signal.SIGKILL)
        for mount in ("bpf", "merged"):
            Container._umount(folder / mount)
        for hierarchy in _cgroup_mounts():
            _rmdir_tree(os.path.join(hierarchy, name))
        shutil.rmtree(f"/run/systemd/nspawn/propagate/{name}", ignore_errors=True)
        shutil.rmtree(folder, ignore_errors=True)


class Container:
    """A Debian machine booted from `root` (read-only beneath an overlay of its own)."""

    def __init__(self, root: Path):
        self.root = root
        self.name = f"{NAME_PREFIX}{os.getpid()}-{next(_made)}"
        self.dir = Path(tempfile.mkdtemp(prefix=f"{self.name}.", dir=SCRATCH))
        self.merged = self.dir / "merged"
        self.bpffs = self.dir / "bpf"
        self.cgroups = [os.path.join(m, self.name) for m in _cgroup_mounts()]
        self.nspawn: Optional[subprocess.Popen] = None
        self.leader = 0
        self.boots = 0
        for sub in ("upper", "work", "merged", "bpf"):
            (self.dir / sub).mkdir()
        self._mount(["-t", "overlay", "overlay", "-o",
                     f"lowerdir={root},upperdir={self.dir / 'upper'},workdir={self.dir / 'work'}", str(self.merged)])

    # Boot and shut down ---------------------------------------------------------

    def boot(self, timeout: float = 60.0) -> None:
        """Start the machine with a fresh bpffs and wait until systemd says it is running."""
        self._mount(["-t", "bpf", "bpf", str(self.bpffs)])
        for cg in self.cgroups:
            os.makedirs(cg, exist_ok=True)
        self.boots += 1
        console = open(self.dir / f"console-{self.boots}.log", "wb")
        cgroups = self.cgroups

        def own_cgroup() -> None:
            for cg in cgroups:
                with open(os.path.join(cg, "cgroup.procs"), "w") as f:
                    f.write(str(os.getpid()))

        with console:
            self.nspawn = subprocess.Popen(
                ["systemd-nspawn", "--quiet", f"--directory={self.merged}", "--boot", "--register=no",
                 "--keep-unit", "--private-network", "--capability=all",
                 f"--system-call-filter={' '.join(SYSCALLS)}", f"--bind={self.bpffs}:/sys/fs/bpf",
                 f"--machine={self.name}", "--console=read-only"],
                stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT, preexec_fn=own_cgroup,
                env=dict(os.environ, SYSTEMD_NSPAWN_UNIFIED_HIERARCHY="1"),
            )
        deadline = time.monotonic() + timeout
        self.leader = 0
        while not self.leader:
            if self.nspawn.poll() is not None or time.monotonic() > deadline:
                raise ContainerError(f"systemd-nspawn did not start the machine: {self.console_tail()}")
            self.leader = self._init_pid()
            time.sleep(0.05)
        while True:  # systemctl answers once PID 1 has its bus up, a moment after it starts
            r = self.run("systemctl", "is-system-running", "--wait", check=False, timeout=timeout)
            state = r.stdout.strip()
            if state or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if state != "running":
            failed = self.run("systemctl", "--failed", "--no-legend", check=False).stdout.strip()
            raise ContainerError(f"the machine booted {state!r}, not 'running'; failed units: {failed}")

    def _init_pid(self) -> int:
        for path in glob.glob(f"/proc/{self.nspawn.pid}/task/*/children"):
            with contextlib.suppress(OSError):
                for pid in Path(path).read_text().split():
                    if Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                        return int(pid)
        return 0

    def reboot(self, timeout: float = 60.0) -> None:
        """`systemctl reboot` inside; nspawn ends, and the machine is booted again
        over the same overlay (its disk), with a new bpffs (nothing pinned)."""
        self.run("systemctl", "reboot", check=False)
        self._wait_down(timeout)
        self.boot(timeout)

    def _wait_down(self, timeout: float) -> None:
        try:
            self.nspawn.wait(timeout)
        except subprocess.TimeoutExpired:
            self.nspawn.kill()
            self.nspawn.wait()
        self.leader = 0
        # What nspawn leaves behind: its cgroups and its propagation folder
        # (it cannot remove the latter here).
        for cg in self.cgroups:
            for child in glob.glob(os.path.join(cg, "*/")):
                _rmdir_tree(child)
        shutil.rmtree(f"/run/systemd/nspawn/propagate/{self.name}", ignore_errors=True)
        self._umount(self.bpffs)

    def close(self) -> None:
        """Power off (killed when it takes too long), and remove every trace."""
        if self.nspawn is not None and self.nspawn.poll() is None:
            with contextlib.suppress(ContainerError, subprocess.TimeoutExpired):
                self.run("systemctl", "poweroff", check=False, timeout=10)
            if self.nspawn.poll() is None:
                self.nspawn.send_signal(signal.SIGTERM)  # nspawn powers the machine off
            self._wait_down(20)
        self._umount(self.merged)
        for cg in self.cgroups:
            _rmdir_tree(cg)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "Container":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # Inside -----------------------------------------------------------------------

    def run(self, *argv: str, input: Optional[bytes | str] = None, check: bool = True,
            timeout: float = 60.0) -> subprocess.CompletedProcess:
        """ARGV inside the machine (every namespace of its PID 1, a clean environment);
        with `check`, a non-zero exit raises ContainerError with its output."""
        text = not isinstance(input, bytes)
        r = subprocess.run(self._inside(argv), input=input, capture_output=True, text=text, timeout=timeout,
                           stdin=subprocess.DEVNULL if input is None else None)
        if check and r.returncode != 0:
            out = r.stdout + r.stderr if text else (r.stdout + r.stderr).decode(errors="replace")
            raise ContainerError(f"`{' '.join(argv)}` in {self.name} exited {r.returncode}: {out.strip()[-2000:]}")
        return r

    def start(self, *argv: str) -> subprocess.Popen:
        """ARGV started inside the machine as `run` runs it, left running (a load that
        goes on while the test acts): its output is read once it ends (communicate)."""
        return subprocess.Popen(self._inside(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def _inside(self, argv: tuple[str, ...]) -> list[str]:
        """The host's command line that runs ARGV inside the machine."""
        if not self.leader:
            raise ContainerError(f"{self.name} is not running")
        return ["nsenter", f"--target={self.leader}", "--all", "env", "-i", *ENV, *argv]

    def write(self, path: str, data: bytes | str) -> None:
        """Write a file inside the machine (its folder made first)."""
        self.run("sh", "-c", 'mkdir -p "$(dirname "$1")" && cat > "$1"', "sh", path, input=data)

    def journal(self, *args: str) -> str:
        """journalctl ARGS of this boot and those before, message text only."""
        return self.run("journalctl", "--no-pager", "-o", "cat", *args, check=False).stdout

    def console_tail(self, lines: int = 15) -> str:
        logs = sorted(self.dir.glob("console-*.log"))
        return "\n".join(logs[-1].read_text(errors="replace").splitlines()[-lines:]) if logs else ""

    # Host helpers -----------------------------------------------------------------

    def _mount(self, args: list[str]) -> None:
        r = subprocess.run(["mount", *args], capture_output=True, text=True)
        if r.returncode != 0:
            raise ContainerError(f"mount {' '.join(args)}: {r.stderr.strip()}")

    @staticmethod
    def _umount(path: Path) -> None:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "--lazy", str(path)], capture_output=True)
