"""Hostile input, at length: every property test of the unit suite with 10,000 examples each
(issue 26, part 2).

    ./scripts/bench.sh fuzz

The unit suite's property tests (tests/support/hostile.py: generated and one-change mutated
TOML files, sock_diag and rtnetlink replies, /proc and /sys text, ethtool answers,
Prometheus answers, kept programs, pinned state of another version, arguments) run in CI
with a few hundred examples each, the same ones at every run.  Here pytest runs them with
the profile "fuzz": FUZZ_EXAMPLES random examples each (RPCTL_FUZZ_EXAMPLES overrides it),
no example database.  The table says, per property, how many examples ran, for how long,
and what it found: a failure is the property's first error line and its smallest failing
example, which the property then keeps as an @example once rpctl is fixed.

quick=True runs two files' properties with 20 examples each: it checks that the run and
its reading still work.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from bench import common
from tests.support.hostile import FUZZ_EXAMPLES

SECTION = "fuzz"
QUICK_FILES = ("tests/unit/test_diag.py", "tests/unit/test_foreign_state.py")
QUICK_EXAMPLES = 20

# What the properties found while they were written, each fixed in rpctl with a test that
# failed before the fix: (input, what it did).
FOUND = (
    ("a TOML key or member name holding a newline; `listen = \"tcp:\\n[::1]:9090\"`", "a message of two lines"),
    ("a sock_diag reply of another family", "ValueError, or a listener of the wrong family"),
    ("NLMSG_DONE with an error of -2**31", "OverflowError"),
    ("a truncated or malformed sock_diag reply", "RuntimeError, which serve's loop did not catch"),
    ("a process named with bytes that are not UTF-8 (comm, stat, status, mountinfo, interrupts)",
     "UnicodeDecodeError in discover, adopt, serve"),
    ("/proc/PID/stat that does not parse", "ValueError, IndexError"),
    ("`CapEff: -1`; `CapEff: zz`", "every capability; ValueError"),
    ("`jiffies:` alone; a damaged /proc/config.gz", "IndexError; EOFError, zlib.error"),
    ("`²` where a digit goes (/proc/interrupts, a port, `restart --signal ²`)", "ValueError, exit 1"),
    ("a CPU list `0-4294967295`", "a set of four billion CPUs"),
    ("header packages 6.1.0-13 and 6.1.0-rc7", "TypeError"),
    ("an ethtool table of 2**32-1 entries", "a 16 GiB buffer (MemoryError)"),
    ("an rtnetlink link reply pyroute2 cannot decode", "struct.error, KeyError; a device named None"),
    ("a Prometheus server that answers a byte at a time", "a query that never ended"),
    ("a server whose status line is not HTTP; JSON nested 100,000 deep", "BadStatusLine; RecursionError"),
    ("Prometheus values NaN, 1e10 unmanaged, `result: 5`, `rpctl_member_name_total`",
     "ValueError, MemoryError, TypeError, a member's name set to a number"),
    ("a kept program whole by its checksum, of another compile", "ValueError in the loader"),
    ("a ctl of family 3 (state of another version)", "an endpoint of family 3"),
    ("a temporary folder `_tmp-web-99999999999999999999`", "OverflowError in the sweep"),
    ("`rpctl weights a=99...9` (5,000 digits)", "ValueError, exit 1"),
    ("a mountinfo line cut short (`- nsfs`; the 10,000-example run)", "IndexError in cleanup"),
)

# `--hypothesis-show-statistics`: a test's id, then per phase its examples.
_TEST_RE = re.compile(r"^(tests/\S+::\S+):$")
_PHASE_RE = re.compile(r"^\s+- (\d+) passing, (\d+) failing, and (\d+) invalid test cases")
_TIME_RE = re.compile(r"^\s+- during (\w+) phase \(([\d.]+) seconds\)")


@dataclass
class Target:
    test: str
    examples: int = 0  # passing and failing examples of every phase
    invalid: int = 0
    seconds: float = 0.0
    found: str = ""  # the failure's first line and its example; "" when the property held


def statistics(text: str) -> dict[str, Target]:
    """The examples and time of each property test, from hypothesis' statistics."""
    out: dict[str, Target] = {}
    current = None
    for line in text.splitlines():
        m = _TEST_RE.match(line)
        if m:
            current = out.setdefault(m.group(1), Target(m.group(1)))
            continue
        if current is None:
            continue
        m = _TIME_RE.match(line)
        if m:
            current.seconds += float(m.group(2))
            continue
        m = _PHASE_RE.match(line)
        if m:
            current.examples += int(m.group(1)) + int(m.group(2))
            current.invalid += int(m.group(3))
    return out


def failures(junit: Path) -> dict[str, str]:
    """test id -> what it found (its error's first line, and the failing example), from a JUnit XML."""
    out = {}
    for case in ET.parse(junit).iter("testcase"):
        failed = case.find("failure")
        if failed is None:
            failed = case.find("error")
        if failed is None:
            continue
        path = case.get("file") or case.get("classname", "").replace(".", "/") + ".py"
        text = failed.get("message") or ""
        example = re.search(r"Fail\w+ (?:test case|example): (.*?)\)\n", failed.text or "", re.S)
        found = text.splitlines()[0] if text else "failed"
        if example:
            # pytest writes the report's lines behind "E   ": the example without them.
            lines = [re.sub(r"^E\s+", "", line) for line in example.group(1).splitlines()]
            found += " -- " + " ".join(" ".join(lines).split())[:300] + ")"
        out[f"{path}::{case.get('name')}"] = found
    return out


def fuzz(files: tuple[str, ...], examples: int) -> tuple[dict[str, Target], float, str]:
    """pytest over `files` with the profile "fuzz" at `examples` each: the targets, the seconds, the summary line."""
    with tempfile.TemporaryDirectory(prefix="rpctl-fuzz-") as tmp:
        junit = Path(tmp) / "junit.xml"
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--hypothesis-profile=fuzz",
             "--hypothesis-show-statistics", f"--junitxml={junit}", *files],
            cwd=common.REPO, capture_output=True, text=True, env={**os.environ, "RPCTL_FUZZ_EXAMPLES": str(examples)},
        )
        seconds = time.monotonic() - started
        targets = statistics(proc.stdout)
        if not targets:
            raise RuntimeError(f"pytest ran no property test (exit {proc.returncode}): {proc.stdout[-2000:]}"
                               f"{proc.stderr[-2000:]}")
        for test, found in failures(junit).items():
            targets.setdefault(test, Target(test)).found = found
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    return targets, seconds, summary


def run(quick: bool) -> None:
    files = QUICK_FILES if quick else ("tests/unit",)
    examples = QUICK_EXAMPLES if quick else int(os.environ.get("RPCTL_FUZZ_EXAMPLES", FUZZ_EXAMPLES))
    targets, seconds, summary = fuzz(files, examples)
    rows = [(f"`{t.test.removeprefix('tests/unit/')}`", t.examples, t.invalid, f"{t.seconds:.1f}",
             t.found.replace("|", "\\|") or "nothing")
            for t in sorted(targets.values(), key=lambda t: t.test)]
    found = [t for t in targets.values() if t.found]
    body = "\n".join([
        "### Hostile input, property-based (issue 26, part 2)",
        "",
        f"`./scripts/bench.sh fuzz`: pytest over tests/unit with the hypothesis profile \"fuzz\", "
        f"{examples:,} random examples asked of each of the {len(targets)} properties (generated, and valid "
        "input with one key, type, value or byte changed, truncated, ...), no example database. "
        "Examples: passing and failing ones of every phase; invalid: drawn, then refused by the "
        "property's own filter (a mutated file that is still valid, for instance). "
        f"Whole run: {seconds:.0f} s ({summary}).",
        "",
        common.table(("property", "examples", "invalid", "seconds", "found"), rows),
        "",
        (f"{len(found)} of {len(targets)} properties found something: each is a bug of rpctl to fix, "
         "its example kept in the property." if found else
         f"None of the {len(targets)} properties found anything in this run."),
        "",
        "What the properties found while they were written, each fixed in rpctl with a test that "
        "failed before the fix:",
        "",
        common.table(("input", "what it did before the fix"), FOUND),
    ])
    common.write_section(SECTION, body)
    print(f"fuzz: {len(targets)} properties, {sum(t.examples for t in targets.values())} examples, "
          f"{len(found)} found something, {seconds:.0f} s", flush=True)
