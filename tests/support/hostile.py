"""Hostile input for property-based tests: hypothesis profiles, generated documents, and one-change
mutations of valid input (a byte flipped, set, dropped or added, a cut, a slice repeated; a TOML
key renamed, retyped, revalued or dropped).

Two profiles: "ci" (the default: a few hundred examples each, no example database, the same
examples at every run) and "fuzz" (10,000 examples each, or $RPCTL_FUZZ_EXAMPLES, random:
`./scripts/bench.sh fuzz`, which runs pytest with `--hypothesis-profile=fuzz`).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

CI_EXAMPLES = 200
FUZZ_EXAMPLES = 10_000


def register_profiles() -> None:
    """Register "ci" and "fuzz" and load "ci"; pytest's --hypothesis-profile, applied after, wins."""
    common = dict(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow,
                                                                         HealthCheck.data_too_large])
    settings.register_profile("ci", max_examples=CI_EXAMPLES, derandomize=True, print_blob=True, **common)
    examples = int(os.environ.get("RPCTL_FUZZ_EXAMPLES", FUZZ_EXAMPLES))
    settings.register_profile("fuzz", max_examples=examples, print_blob=True, **common)
    settings.load_profile("ci")


def with_fixtures(test):
    """A property test that takes function-scoped fixtures which only patch (monkeypatch and
    what builds on it): the same for every example, so hypothesis need not worry."""
    return settings(suppress_health_check=[HealthCheck.function_scoped_fixture])(test)


# Bytes ----------------------------------------------------------------------------------------


@st.composite
def mutated(draw, seed: bytes) -> bytes:
    """`seed` with one change: a bit flipped, a byte set, a slice dropped, bytes put in, the end
    cut off, or a slice repeated."""
    data = bytearray(seed)
    n = len(data)
    kind = draw(st.sampled_from(["flip", "set", "drop", "insert", "truncate", "repeat"] if n else ["insert"]))
    at = draw(st.integers(0, max(n - 1, 0)))
    if kind == "flip":
        data[at] ^= 1 << draw(st.integers(0, 7))
    elif kind == "set":
        data[at] = draw(st.sampled_from([0, 0xFF, 0x7F, 0x80, ord("\n"), ord('"'), ord("="), ord("["), ord("-")])
                        | st.integers(0, 255))
    elif kind == "drop":
        del data[at:at + draw(st.integers(1, 16))]
    elif kind == "insert":
        data[at:at] = draw(st.binary(min_size=1, max_size=16))
    elif kind == "truncate":
        del data[at:]
    else:
        end = draw(st.integers(at, n))
        data[at:at] = data[at:end]
    return bytes(data)


def mutated_text(seed: str) -> st.SearchStrategy[str]:
    """mutated() of the UTF-8 of `seed`, decoded again with what does not decode replaced."""
    return mutated(seed.encode()).map(lambda b: b.decode("utf-8", "replace"))


# TOML -----------------------------------------------------------------------------------------

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=24)
scalars = (st.integers(-(2**63), 2**63 - 1) | st.sampled_from([0, 1, -1, 2, 3, 4, 5, 8, 16, 65535, 65536, 10000, 10001])
           | st.floats() | st.booleans() | text
           | st.sampled_from(["tcp:127.0.0.1:8080", "udp:[::1]:53", "nginx", "cpu", "rss:eth0", "weighted",
                              "newest", "cookie", "assigned", "{comm}-{i}", "worker-{i}", "/usr/sbin/nginx", "/"]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(text | st.sampled_from(["comm", "exe", "uid", "cgroup", "command", "count",
                                                                "canary", "backoff_initial", "backoff_max"]),
                                        inner, max_size=4),
                      max_leaves=8)


def toml_value(value: Any) -> str:
    """A value as TOML writes it (inline: arrays and inline tables)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return ("-inf" if value < 0 else "inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k, ensure_ascii=False)} = {toml_value(v)}" for k, v in value.items()) + "}"


def toml_groups(doc: dict[str, Any]) -> str:
    """A document {"group": [table, ...], other keys} as a file of [[group]] tables."""
    head = [f"{json.dumps(k, ensure_ascii=False)} = {toml_value(v)}" for k, v in doc.items() if k != "group"]
    out = ["\n".join(head)] if head else []
    groups = doc.get("group", [])
    if not isinstance(groups, list) or not all(isinstance(g, dict) for g in groups):
        return "\n".join(out + [f"group = {toml_value(groups)}"]) + "\n"
    for table in groups:
        out.append("[[group]]\n" + "".join(f"{json.dumps(k, ensure_ascii=False)} = {toml_value(v)}\n"
                                           for k, v in table.items()))
    return "\n".join(out) + "\n"


@st.composite
def changed_document(draw, doc: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    """`doc` (a valid {"group": [...]}) with one change in one group: a key renamed (to another
    known key or to anything), its value of another type, another value of its type, or the key
    dropped; or a key added."""
    groups = [dict(g) for g in doc["group"]]
    k = draw(st.integers(0, len(groups) - 1))
    table = groups[k]
    key = draw(st.sampled_from(sorted(table)))
    kind = draw(st.sampled_from(["rename", "retype", "revalue", "drop", "add"]))
    if kind == "rename":
        table[draw(st.sampled_from(keys) | text)] = table.pop(key)
    elif kind == "retype":
        table[key] = draw(values.filter(lambda v: type(v) is not type(table[key])))
    elif kind == "revalue":
        table[key] = draw(_same_type(table[key]))
    elif kind == "drop":
        del table[key]
    else:
        table[draw(st.sampled_from(keys) | text)] = draw(values)
    return {"group": groups}


def _same_type(value: Any) -> st.SearchStrategy:
    if isinstance(value, bool):
        return st.booleans()
    if isinstance(value, int):
        return st.integers(-(2**63), 2**63 - 1) | st.integers(-2, 70000)
    if isinstance(value, float):
        return st.floats()
    if isinstance(value, str):
        return mutated_text(value) | text
    if isinstance(value, list):
        return st.lists(st.sampled_from(value) | values, max_size=5) if value else st.lists(values, max_size=3)
    return st.dictionaries(st.sampled_from(sorted(value)) | text, values, min_size=0, max_size=len(value) + 1)


# Text of /proc and /sys ------------------------------------------------------------------------


def proc_text(*seeds: str) -> st.SearchStrategy[str]:
    """Text of a /proc file: a sample with one change, the sample's words shuffled into other
    lines, or anything (digits of other scripts, control characters, no newline at all)."""
    words = sorted({w for seed in seeds for w in seed.split()} | {"-1", "0x", "²", "18446744073709551616", ":", ")"})
    lines = st.lists(st.lists(st.sampled_from(words) | text, max_size=8).map(" ".join), max_size=12).map("\n".join)
    return st.one_of(*(mutated_text(seed) for seed in seeds), lines, st.text(max_size=200))


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | text,
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
                           max_leaves=12)


@st.composite
def changed_json(draw, doc: Any) -> Any:
    """`doc` (a JSON value) with one value somewhere in it replaced by another, of any type."""
    if isinstance(doc, dict) and doc and draw(st.integers(0, 3)):
        key = draw(st.sampled_from(sorted(doc)))
        return {**doc, key: draw(changed_json(doc[key]))}
    if isinstance(doc, list) and doc and draw(st.integers(0, 3)):
        i = draw(st.integers(0, len(doc) - 1))
        return [*doc[:i], draw(changed_json(doc[i])), *doc[i + 1:]]
    return draw(json_values | st.sampled_from(["NaN", "+Inf", "-1", "1e400", "rpctl_member_name_total"]))


# Slow peers ----------------------------------------------------------------------------------


def trickle(sock, data: bytes, every: float, stop) -> None:
    """Send `data` over and over on `sock`, a byte every `every` seconds, until `stop` (a
    threading.Event) is set or the peer goes: each wait of the peer ends, the whole never does."""
    import itertools

    for byte in itertools.cycle(data):
        if stop.wait(every):
            return
        try:
            sock.send(bytes([byte]))
        except OSError:
            return
