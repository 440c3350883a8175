"""Groups at scale: what `rpctl apply` of N groups costs, and unloading them.

One process (a holder of 2 SO_REUSEPORT listeners per port, its comm
HOLDER_COMM) serves N ports in a fresh network namespace; a file of N
groups adopts them; `rpctl apply -c FILE` runs as its own process, as an
operator runs it, and /usr/bin/time-like figures come from its rusage:
wall, user and system (kernel) CPU.  Then `rpctl apply --prune` of a file
with no group unloads them all.

Two starts: "cold" with no group anywhere on the host (the first group
loads and verifies the shared program), "warm" with a group of another
namespace keeping it loaded (as on a host where rpctl already steers).
`own=True` gives each group a program of its own (RPCTL_OWN_PROGRAM=1):
the cost before the shared program, for comparison.

    .venv/bin/python -m bench._scale_groups [N ...]     (prints a table)
"""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from tests.support.netns import fresh_netns
from tests.support.traffic import Members

HOLDER_COMM = "rpscale-holder"
BASE_PORT = 20000
LISTENERS = 2

_HOLDER = r"""
import ctypes, os, signal, socket, sys
ctypes.CDLL(None).prctl(15, sys.argv[1].encode(), 0, 0, 0)   # PR_SET_NAME
socks = []
for port in range(int(sys.argv[2]), int(sys.argv[2]) + int(sys.argv[3])):
    for _ in range(int(sys.argv[4])):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind(("127.0.0.1", port))
        s.listen(64)
        socks.append(s)
print("ready", flush=True)
signal.pause()
"""


def config(groups: int) -> str:
    return "".join(
        f'[[group]]\nname = "g{i}"\nlisten = "tcp:127.0.0.1:{BASE_PORT + i}"\nadopt = {{ comm = "{HOLDER_COMM}" }}\n\n'
        for i in range(groups)
    )


@contextmanager
def holder(groups: int) -> Iterator[subprocess.Popen]:
    """The process that holds every group's listeners, ready."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, HOLDER_COMM, str(BASE_PORT), str(groups), str(LISTENERS)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield proc
    finally:
        proc.kill()
        proc.wait()


def timed(argv: list[str], env: dict | None = None) -> dict:
    """Run `rpctl ARGV` to its end: wall seconds, user and system CPU seconds (its rusage)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "rpctl.cli", *argv], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"rpctl {' '.join(argv)}: exit {done.returncode}: {done.stderr.strip()[-300:]}")
    return {"wall": wall, "user": after.ru_utime - before.ru_utime, "sys": after.ru_stime - before.ru_stime}


@contextmanager
def keeper() -> Iterator[None]:
    """A group in a namespace of its own, keeping the shared program loaded."""
    with fresh_netns("rpscale-keep"):
        members = Members(port=BASE_PORT - 1)
        members.add()
        members.register_all()
        yield


def apply_and_prune(groups: int, own: bool = False) -> dict:
    """In a fresh namespace: `rpctl apply` of `groups` groups, then `apply --prune` of an empty file."""
    env = {"RPCTL_OWN_PROGRAM": "1"} if own else {}
    with tempfile.TemporaryDirectory() as tmp, fresh_netns("rpscale"), holder(groups):
        full, empty = Path(tmp, "full.toml"), Path(tmp, "empty.toml")
        full.write_text(config(groups))
        empty.write_text("# no group\n")
        up = timed(["apply", "-c", str(full)], env)
        down = timed(["apply", "--prune", "-c", str(empty)], env)
        with socket.socket() as probe:  # the groups are gone: the port is the kernel's again
            probe.settimeout(2)
            probe.connect(("127.0.0.1", BASE_PORT))
    return {"groups": groups, "up": up, "down": down}


def measure(sizes=(1, 16, 64, 256), own_sizes=(1, 16)) -> list[dict]:
    """Rows of apply/prune costs: warm (shared program loaded) at each size, cold at the largest,
    and a program of each group's own at `own_sizes`."""
    rows = []
    with keeper():
        for n in sizes:
            rows.append({"start": "warm", **apply_and_prune(n)})
        for n in own_sizes:
            rows.append({"start": "own program", **apply_and_prune(n, own=True)})
    rows.append({"start": "cold", **apply_and_prune(max(sizes))})
    return rows


def main(argv: list[str]) -> None:
    sizes = tuple(int(a) for a in argv) or (1, 16, 64, 256)
    print(f"{'start':12} {'groups':>6} {'up wall':>9} {'up sys':>8} {'sys/group':>10} {'down wall':>10} {'down sys':>9}")
    for r in measure(sizes, own_sizes=tuple(n for n in sizes if n <= 16)):
        up, down = r["up"], r["down"]
        print(f"{r['start']:12} {r['groups']:6d} {up['wall']:8.2f}s {up['sys']:7.2f}s "
              f"{1000 * up['sys'] / r['groups']:8.1f}ms {down['wall']:9.2f}s {down['sys']:8.2f}s")


if __name__ == "__main__":
    main(sys.argv[1:])
