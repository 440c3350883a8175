"""Run the benchmark suite: every bench/*.py module, or the ones named.

    ./scripts/bench.sh [--quick] [NAME ...]       (sets up, then runs this module)
    .venv/bin/python -m bench.run [--quick] [NAME ...]     (from the repository root)

The convention every benchmark module follows (bench/<name>.py):

- It defines ``def run(quick: bool) -> None``; the runner imports the module
  and calls it.  Nothing runs at import time.
- ``run`` measures, then rewrites its own section of docs/benchmarks.md with
  ``common.write_section(SECTION, body)`` (one section per module, named by a
  short kebab-case ``SECTION`` constant, e.g. ``control-plane``).  The body
  starts with a ``### Title (issue N)`` line, says the exact command
  (``./scripts/bench.sh NAME``), and gives medians of alternating rounds
  (``common.alternate``) and ratios measured side by side in the same run.
- Where a picture reads faster than the table (bars with ranges, a cost
  against group size), ``plots`` draws a PNG beside the document and the
  body shows it (``docs/bench-NAME.png``).
- ``quick=True`` checks that the benchmark still runs end to end (a round or
  two, small sizes) in a few seconds; its figures mean nothing, so it writes
  to a scratch copy of the document (``common.DOC`` is redirected by the
  runner), never over the published figures.
- Network traffic stays on loopback in a fresh namespace
  (``tests.support.netns.fresh_netns``); helpers shared with the kernel
  tests come from the package tests.support (``from tests.support.traffic
  import Members``), the shared pieces of bench/ from ``bench.common`` and
  ``bench.plots``; both resolve because the suite runs as
  ``python -m bench.run`` from the repository root.
- The whole suite stays under 10 minutes, the quick mode under one minute;
  a module of ALONE runs only when named (and in the quick mode), one of
  ONLY_WHEN_NAMED only when named.

Modules whose name starts with ``_`` and the shared ``common`` and ``plots``
are not benchmarks.  The soak (``soak``, 30 minutes by default; its 2-minute
run is a kernel test) runs only when named, never as part of "every
benchmark".  Options after one benchmark's name are its own
(``soak --minutes 5 --seed 2``): its ``run`` takes them as a second argument.
A failing benchmark is reported and the others still run; the exit status
is 1 if any failed.
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from bench import common

BENCH = Path(__file__).resolve().parent

NOT_BENCHMARKS = {"common", "plots", "run"}
# Run when named (and in the quick mode), not by the whole suite: minutes of their own that
# measure no time (`fuzz`: 10,000 examples of every property test).
ALONE = {"fuzz"}
# Run only when named, never by the whole suite nor the quick mode (the soak's 2-minute
# run is a kernel test of its own).
ONLY_WHEN_NAMED = {"soak"}


def available() -> list[str]:
    return sorted(
        p.stem for p in BENCH.glob("*.py") if p.stem not in NOT_BENCHMARKS and not p.stem.startswith("_")
    )


def run_one(name: str, quick: bool, options: list[str] | None = None) -> bool:
    started = time.monotonic()
    print(f"== {name}", flush=True)
    try:
        module = importlib.import_module(f"bench.{name}")
        module.run(quick, options) if options else module.run(quick)
    except Exception:  # one broken benchmark must not hide the others' results
        traceback.print_exc()
        print(f"== {name}: FAILED after {time.monotonic() - started:.1f} s", flush=True)
        return False
    print(f"== {name}: done in {time.monotonic() - started:.1f} s", flush=True)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke check: the suite runs, figures are not kept")
    every = [n for n in available() if n not in ONLY_WHEN_NAMED]
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default: all of {', '.join(every)}; "
                        f"{', '.join(sorted(ONLY_WHEN_NAMED))} only when named)")
    argv = sys.argv[1:] if argv is None else argv
    # Options after a benchmark's name (other than --quick) are that benchmark's own.
    first = next((i for i, a in enumerate(argv) if a.startswith("-") and a not in ("--quick", "-h", "--help")
                  and any(not b.startswith("-") for b in argv[:i])), len(argv))
    args = parser.parse_args(argv[:first])
    options = argv[first:]
    names = args.names or [n for n in every if args.quick or n not in ALONE]
    unknown = sorted(set(names) - set(available()))
    if unknown:
        parser.error(f"no such benchmark: {', '.join(unknown)} (have: {', '.join(available())})")
    if options and len(names) != 1:
        parser.error(f"options {' '.join(options)} are one benchmark's: name exactly one")
    scratch = None
    if args.quick:
        # Quick figures are noise: write them to a copy, keep the real document.
        scratch = Path(tempfile.mkdtemp(prefix="rpctl-bench-"))
        common.DOC = scratch / "benchmarks.md"
        if (common.REPO / "docs" / "benchmarks.md").exists():
            shutil.copy(common.REPO / "docs" / "benchmarks.md", common.DOC)
    try:
        failed = [n for n in names if not run_one(n, args.quick, options)]
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
