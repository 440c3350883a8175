"""The command line's start: each rpctl command's wall time over its interpreter's bare start
(issue 23, goal 3: at most GOAL_MS over it, with 4 members as with 256 groups; `status --json`
of 256 groups at most STATUS_256_MS in all).

A command runs as an operator runs it: a fresh process of the console script next to this
Python (controlplane.rpctl_argv), output thrown away, in the caller's network namespace.  Its
reference is `python -c pass` of the same interpreter and site: the virtualenv's python, whose
site imports what site-wide .pth files ask for, which `rpctl` pays as well.  The two run one
after the other in every round, in an order that alternates (common.alternate), and the figure
is the difference of their medians.  Each process's CPU time (user and system, from the
kernel's accounting of children) is kept beside its wall time: on a machine shared with other
work it moves far less than the wall time does.

measure_cli() measures the groups there are; run alone, this module makes them in a fresh
namespace first and prints a table:

    .venv/bin/python -m bench._scale_cli                       # one group of 4 members
    .venv/bin/python -m bench._scale_cli --groups 256 --members 2 --rounds 9
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import subprocess
import sys
import time
from typing import Callable, Iterator, Sequence

from bench.common import alternate, machine, median, table
from bench.controlplane import ENV, rpctl_argv
from tests.support.netns import fresh_netns
from tests.support.traffic import Members

COMMANDS = ("--help", "status", "status --json", "weights")
GOAL_MS = 40
STATUS_256_MS = 300
PORT = 7500


def timed(argv: list[str]) -> Callable[[], tuple[float, float]]:
    """A variant: run `argv` once, return its (wall, CPU) time in ms; a failure raises."""

    def once() -> tuple[float, float]:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, env=ENV)
        wall = (time.perf_counter() - start) * 1e3
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        return wall, (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) * 1e3

    return once


def measure_cli(commands: Sequence[str] = COMMANDS, rounds: int = 9) -> list[dict]:
    """Per command line (words after `rpctl`): the medians over `rounds` of the command and of
    the bare interpreter in the same rounds, and the difference, in ms of wall time (`*_ms`) and
    of CPU time (`*_cpu_ms`).  A command that fails raises (subprocess.CalledProcessError): a
    figure of an error message is no figure."""
    bare = timed([sys.executable, "-c", "pass"])
    rows = []
    for command in commands:
        variants = {"bare": bare, "command": timed(rpctl_argv() + command.split())}
        alternate(1, variants)  # bytecode and page cache: not what is measured
        got = alternate(rounds, variants)
        row: dict = {"command": f"rpctl {command}", "rounds": rounds}
        for unit, at in (("ms", 0), ("cpu_ms", 1)):
            bare_ms, command_ms = (median(t[at] for t in got[v]) for v in ("bare", "command"))
            row.update({f"bare_{unit}": bare_ms, f"command_{unit}": command_ms, f"over_{unit}": command_ms - bare_ms})
        rows.append(row)
    return rows


@contextlib.contextmanager
def groups_in_fresh_netns(groups: int, members: int) -> Iterator[list[str]]:
    """`groups` groups of `members` listeners each (held by this process, registered through
    the library) in a fresh network namespace entered for the block; yields their names."""
    with fresh_netns("rpctl-cli"), contextlib.ExitStack() as held:
        names = []
        for g in range(groups):
            listeners = Members(port=PORT + g)
            held.callback(listeners.close)
            for _ in range(members):
                listeners.add()
            names.append(listeners.register_all())
        yield names


def report(rows: list[dict]) -> str:
    cells = [[f"`{r['command']}`", f"{r['bare_ms']:.1f}", f"{r['command_ms']:.1f}", f"{r['over_ms']:+.1f}",
              f"{r['over_cpu_ms']:+.1f}"] for r in rows]
    return table(["command", "python -c pass (ms)", "command (ms)", "over the bare start (ms)",
                  "over it in CPU time (ms)"], cells)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench._scale_cli", description=__doc__.split("\n\n")[0])
    parser.add_argument("--groups", type=int, default=1)
    parser.add_argument("--members", type=int, default=4, help="listeners per group")
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    with groups_in_fresh_netns(args.groups, args.members) as names:
        made = time.perf_counter() - start
        # weights reads one group: with several, it must be named.
        commands = [c if c != "weights" or len(names) == 1 else f"weights --group {names[0]}" for c in COMMANDS]
        rows = measure_cli(commands, args.rounds)
    print(f"{args.groups} group(s) of {args.members} members (made in {made:.1f} s), median of {args.rounds} "
          f"alternating rounds; {machine()}")
    print(report(rows))


if __name__ == "__main__":
    main()
