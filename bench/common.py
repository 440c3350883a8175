"""Shared pieces of the benchmarks: the machine line, medians, alternating
rounds, and rewriting one section of docs/benchmarks.md.

Each benchmark owns one section of docs/benchmarks.md, delimited by
``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->``; a run rewrites only its
own section, so benchmarks can be run one at a time or all together
(bench/run.py).  Benchmarks reuse the kernel tests' namespace and traffic
helpers (tests/kernel/netns.py, tests/kernel/traffic.py) rather than copies.
"""

from __future__ import annotations

import os
import platform
import re
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence, TypeVar

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "benchmarks.md"
sys.path.insert(0, str(REPO / "tests" / "kernel"))

T = TypeVar("T")


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def alternate(rounds: int, variants: Mapping[str, Callable[[], T]]) -> dict[str, list[T]]:
    """Run every variant once per round, rotating the order each round so
    that drift of the machine (thermal, other load) spreads over all."""
    names = list(variants)
    results: dict[str, list[T]] = {n: [] for n in names}
    for r in range(rounds):
        k = r % len(names)
        for n in names[k:] + names[:k]:
            results[n].append(variants[n]())
    return results


def _first_line(cmd: Sequence[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "?"
    return out.strip().splitlines()[0] if out.strip() else "?"


def machine() -> str:
    """One line naming what the figures were measured on."""
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    debian = "?"
    try:
        debian = Path("/etc/debian_version").read_text().strip()
    except OSError:
        pass
    return (
        f"{os.cpu_count()} CPUs ({cpu}), {mem_gib:.0f} GiB, Debian {debian}, "
        f"kernel {platform.release().split('-')[0]}, Python {platform.python_version()}"
    )


def table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_section(name: str, body: str, doc: Path | None = None) -> None:
    """Replace (or append) the section NAME of docs/benchmarks.md with BODY,
    stamped with the machine line."""
    # Looked up at call time: bench/run.py --quick points DOC at a scratch copy.
    doc = doc or DOC
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{body.rstrip()}\n\nMachine: {machine()}.\n{end}"
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    doc.write_text(text)
