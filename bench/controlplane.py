"""Control plane: wall time of rpctl's commands, against bpftool reading the same map.

Every command is a fresh process, as an operator runs it, in a fresh network
namespace whose group has 4, 64 or 256 members (test-held SO_REUSEPORT
listeners registered through the library).  The reference is
`bpftool map dump pinned <group>/members` (a C program reading one of the
maps `rpctl weights` reads) and an empty Python process (the interpreter's
own start, which no Python command can go below).  Where the time of
`rpctl status --json` goes is read from `python -X importtime`.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from bench import plots
from bench.common import alternate, median, table, write_section
from tests.support.netns import fresh_netns
from tests.support.traffic import Members

SECTION = "control-plane"
PORT = 7300
SIZES, QUICK_SIZES = (4, 64, 256), (4,)
ROUNDS, QUICK_ROUNDS = 9, 1
GOAL_MS = 150


def rpctl_argv() -> list[str]:
    """The console script next to this Python (what `rpctl` on PATH runs), else -m."""
    script = Path(sys.executable).with_name("rpctl")
    return [str(script)] if script.exists() else [sys.executable, "-m", "rpctl.cli"]


# An installed rpctl runs from cached bytecode; a shell that sets
# PYTHONDONTWRITEBYTECODE would make every command compile its sources again.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def timed(argv: list[str], after: list[str] | None = None) -> Callable[[], float]:
    """A variant: run `argv` and return its wall time in ms; `after` (untimed)
    puts the state back, so that every round starts from the same state."""

    def once() -> float:
        start = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, env=ENV)
        took = (time.perf_counter() - start) * 1e3
        if after:
            subprocess.run(after, check=True, stdout=subprocess.DEVNULL, env=ENV)
        return took

    return once


def toggled(argv_for: Callable[[int], list[str]]) -> Callable[[], float]:
    """A write that changes something every time (weight 2, then 1, ...)."""
    values = itertools.cycle((2, 1))
    return lambda: timed(argv_for(next(values)))()


def variants(group_dir: str) -> dict[str, Callable[[], float]]:
    rp = rpctl_argv()
    return {
        "python (empty process)": timed([sys.executable, "-c", "pass"]),
        "bpftool map dump pinned .../members": timed(["bpftool", "map", "dump", "pinned", f"{group_dir}/members"]),
        "rpctl weights": timed(rp + ["weights"]),
        "rpctl weights w0=2": toggled(lambda w: rp + ["weights", f"w0={w}"]),
        "rpctl drain w1": timed(rp + ["drain", "w1"], after=rp + ["undrain", "w1"]),
        "rpctl status --json": timed(rp + ["status", "--json"]),
    }


def import_breakdown(top: int = 6) -> list[tuple[str, float]]:
    """The heaviest top-level imports of `rpctl status --json` (cumulative ms)."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "rpctl.cli", "status", "--json"],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV,
    )
    found = []
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \| (\S.*)$", line)  # top level: no indent
        if m:
            found.append((m.group(2), int(m.group(1)) / 1e3))
    return sorted(found, key=lambda x: -x[1])[:top]


def _create_ms(members: Members, program_cache: str) -> tuple[str, float]:
    """Register the first member of `members` (library call), as a fresh
    process would: no program in memory, `program_cache` the folder of
    kept programs.  The group's name and the milliseconds it took."""
    from rpctl.controller.kernel import compiled

    compiled.forget()
    os.environ[compiled.CACHE_ENV] = program_cache
    try:
        start = time.perf_counter()
        name = members.register_all(count=1)
        return name, (time.perf_counter() - start) * 1e3
    finally:
        del os.environ[compiled.CACHE_ENV]


def measure(n: int, rounds: int) -> tuple[dict[str, float], tuple[float, float, float], list[tuple[str, float]]]:
    """Medians per command; ms to create a group with no compiled program
    kept and with one, and to register each further member (library calls,
    mean); the import breakdown.  In a fresh namespace."""
    from rpctl.controller.store import group
    from rpctl.controller.store.state import Layout

    with fresh_netns("rpctl-b"), tempfile.TemporaryDirectory(prefix="rpctl-programs-") as programs:
        members, again = Members(port=PORT), Members(port=PORT + 1)
        try:
            for _ in range(n):
                members.add()
            again.add()
            name, compiling = _create_ms(members, programs)
            start = time.perf_counter()
            members.register_all(first=1)
            per_member = (time.perf_counter() - start) * 1e3 / (n - 1)
            other, kept = _create_ms(again, programs)
            group.unload(other, force=True)  # the commands below see one group
            register_ms = (compiling, kept, per_member)
            group_dir = Layout().group_dir(name)
            warm_up = variants(group_dir)
            alternate(1, warm_up)  # page cache, bytecode cache: not what is measured
            results = alternate(rounds, variants(group_dir))
            imports = import_breakdown()
        finally:
            members.close()
            again.close()
    return {k: median(v) for k, v in results.items()}, register_ms, imports


def report(by_size: dict[int, tuple[dict[str, float], float, list]], rounds: int) -> str:
    sizes = list(by_size)
    commands = list(by_size[sizes[0]][0])
    floor = "bpftool map dump pinned .../members"
    rows = []
    for cmd in commands:
        cells = [f"`{cmd}`"]
        for n in sizes:
            ms = by_size[n][0][cmd]
            cells.append(f"{ms:.0f} ms ({ms / by_size[n][0][floor]:.0f}x)")
        rows.append(cells)
    rows.append(["first register: creates the group, compiles and loads the program (library call)"]
                + [f"{by_size[n][1][0]:.0f} ms" for n in sizes])
    rows.append(["first register of another group: loads the kept program (library call, as a fresh process)"]
                + [f"{by_size[n][1][1]:.0f} ms" for n in sizes])
    rows.append(["register one more member (library call, mean up to that size)"]
                + [f"{by_size[n][1][2]:.0f} ms" for n in sizes])
    figure = plots.lines(
        "controlplane", f"Wall time of one command (fresh process, median of {rounds} rounds)", "ms", sizes,
        {cmd: [by_size[n][0][cmd] for n in sizes] for cmd in commands}, goal=GOAL_MS,
    )
    worst = max(ms for n in sizes for c, ms in by_size[n][0].items() if c.startswith("rpctl"))
    imports = by_size[sizes[0]][2]
    return "\n".join([
        "### Control plane (issue 7, part 4; part 5 for the sizes)",
        "",
        "```sh",
        "./scripts/bench.sh controlplane",
        "```",
        "",
        f"Wall time of one command, a fresh process each, median of {rounds} alternating rounds;",
        "in brackets, the ratio to `bpftool map dump` of the group's `members` map in the same",
        f"rounds. Goal: every rpctl command under {GOAL_MS} ms. Slowest here: {worst:.0f} ms.",
        "",
        table(["command"] + [f"{n} members" for n in sizes], rows),
        "",
        figure,
        "",
        f"Heaviest top-level imports of `rpctl status --json` ({sizes[0]} members, `python -X importtime`,",
        "cumulative): " + ", ".join(f"{mod} {ms:.0f} ms" for mod, ms in imports) + ".",
        "No command but the first `register` of a group imports bcc or compiles C, and it only when",
        "no compiled program is kept (/var/cache/rpctl/programs; `rpctl doctor` imports bcc to check it):",
        "tests/kernel/test_start_commands_without_bcc.py.",
        "A write (`weights w0=2`, `drain`) reads the live generation element (its 1,024-slot",
        "table included, decision 0005) and writes the other: two map calls of about 50 KiB;",
        "the growth with members is reading every member's counters and, for the text",
        "commands, one line per member (cli/layout.py; rich's Table took about 0.25 ms per row).",
    ])


def run(quick: bool) -> None:
    sizes, rounds = (QUICK_SIZES, QUICK_ROUNDS) if quick else (SIZES, ROUNDS)
    by_size = {n: measure(n, rounds) for n in sizes}
    write_section(SECTION, report(by_size, rounds))
    for n, (medians, reg, _) in by_size.items():
        print(f"{n:4d} members: " + ", ".join(f"{k} {v:.0f} ms" for k, v in medians.items())
              + f", create {reg[0]:.0f} ms (compiling), {reg[1]:.0f} ms (kept program),"
              + f" register {reg[2]:.0f} ms/member", flush=True)
