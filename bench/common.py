"""Shared pieces of the benchmarks: the machine line, medians, alternating
rounds, and rewriting one section of docs/benchmarks.md.

Each benchmark owns one section of docs/benchmarks.md, delimited by
``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->``; a run rewrites only its
own section, so benchmarks can be run one at a time or all together
(``python -m bench.run``).  Benchmarks reuse the kernel tests' namespace and
traffic helpers (tests.support.netns, tests.support.traffic) rather than copies.
"""

from __future__ import annotations

import os
import platform
import re
import statistics
import subprocess
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence, TypeVar

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "benchmarks.md"

T = TypeVar("T")


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def span(values: Iterable[float], fmt: str = "{:.0f}") -> str:
    """'lowest-highest' of a benchmark's rounds, each formatted with fmt."""
    vs = list(values)
    return f"{fmt.format(min(vs))}-{fmt.format(max(vs))}"


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


# wrk ----------------------------------------------------------------------------------

_ERRORS_RE = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_NON2XX_RE = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_REQUESTS_RE = re.compile(r"(\d+) requests in ([\d.]+)(m?s)")


def parse_wrk(text: str) -> dict:
    """wrk's summary -> requests, seconds, rate, errors by kind, non-2xx, failed."""
    m = _REQUESTS_RE.search(text)
    if not m:
        raise ValueError(f"no request count in wrk output: {text!r}")
    requests = int(m.group(1))
    seconds = float(m.group(2)) / (1000.0 if m.group(3) == "ms" else 1.0)
    errors = dict.fromkeys(("connect", "read", "write", "timeout"), 0)
    e = _ERRORS_RE.search(text)
    if e:
        errors = dict(zip(errors, map(int, e.groups())))
    n = _NON2XX_RE.search(text)
    non2xx = int(n.group(1)) if n else 0
    return {
        "requests": requests,
        "seconds": seconds,
        "rate": requests / seconds if seconds else 0.0,
        "errors": errors,
        "non2xx": non2xx,
        "failed": sum(errors.values()) + non2xx,
    }


def wrk_command(url: str, threads: int, connections: int, seconds: float) -> list[str]:
    """wrk opening a new connection per request (`Connection: close`)."""
    return ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds:g}s", "-H", "Connection: close", url]


def write_section(name: str, body: str, doc: Path | None = None) -> None:
    """Replace (or append) the section NAME of docs/benchmarks.md with BODY,
    stamped with the machine line."""
    # Looked up at call time: bench.run --quick points DOC at a scratch copy.
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
