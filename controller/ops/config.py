"""Groups described in a TOML file (default /etc/rpctl/rpctl.toml), checked whole.

    [[group]]
    name = "web"
    listen = "tcp:127.0.0.1:8080"
    adopt = { comm = "nginx" }
    weights = { "nginx-1" = 3 }

load() returns a Config or raises InvalidInput with ONE line that names the
file, the line, the group and the key: `rpctl.toml:7: group 'web': key
'weights': weight of nginx-1: 20000 is out of range 0..10000`.  Each key is
parsed by its entry of GROUP_KEYS (controller/ops/config_keys.py); what
holds between keys of a group (adopt or run, a threshold of the group's
protocol, creation options of UDP groups) and between groups (names and
endpoints once each) is checked here.  tomllib gives values without
positions: the line is found in the text (controller/ops/toml_lines.py).

The types read (GroupSpec, Config, ...) are in controller/ops/config_spec.py,
the file's default path in controller/ops/config_defaults.py, and a run
group's defaults, those of `rpctl run`, in controller/ops/run_defaults.py;
callers find them all here.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any, Mapping, Optional

from ..contract.errors import InvalidInput, NotFound
from ..contract.refs import Param
from ..store.options import GroupOptions
from ..tables.naming import check_format
from .config_defaults import DEFAULT_PATH
from .config_keys import COMM_LEN, GROUP_KEYS, OPTION_FIELDS, REQUIRED, BadValue, Key, option_message, parse_endpoint
from .config_spec import WEIGHTED, AdoptRule, Config, GroupSpec, PinSpec, RunSpec
from .run_defaults import BACKOFF_INITIAL, BACKOFF_MAX, RUN_NAMES
from .toml_lines import Lines

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.9/3.10 only
    import tomli as tomllib

__all__ = [
    "BACKOFF_INITIAL",
    "BACKOFF_MAX",
    "COMM_LEN",
    "DEFAULT_PATH",
    "GROUP_KEYS",
    "OPTION_FIELDS",
    "REQUIRED",
    "RUN_NAMES",
    "WEIGHTED",
    "AdoptRule",
    "Config",
    "GroupSpec",
    "Key",
    "PinSpec",
    "RunSpec",
    "load",
    "loadb",
    "loads",
    "parse_endpoint",
]


def _fail(path: str, line: int, *parts: str) -> InvalidInput:
    return InvalidInput(": ".join((f"{path}:{line}", *parts)))


def _group_label(raw: Mapping[str, object], k: int) -> str:
    name = raw.get("name")
    return f"group {name!r}" if isinstance(name, str) else f"group #{k + 1}"


def _group(path: str, lines: Lines, k: int, raw: object) -> GroupSpec:
    if not isinstance(raw, dict):
        raise _fail(path, lines.group(k), f"group #{k + 1}", "is not a table")
    label = _group_label(raw, k)
    values: dict[str, Any] = {}
    for key, value in raw.items():
        entry = GROUP_KEYS.get(key)
        if entry is None:
            raise _fail(path, lines.key(k, key), label, f"key {key!r}", f"unknown key (known: {', '.join(GROUP_KEYS)})")
        try:
            values[entry.field] = entry.parse(value)
        except BadValue as e:
            where = f"key {key + '.' + e.subkey if e.subkey else key!r}"
            raise _fail(path, lines.key(k, key, e.subkey), label, where, e.message) from None
    for key in REQUIRED:
        if key not in raw:
            raise _fail(path, lines.group(k), label, f"key '{key}'", "missing")
    if ("adopt" in raw) == ("run" in raw):
        raise _fail(path, lines.group(k), label, "key 'adopt' or 'run'",
                    "give exactly one: adopt (whose listeners are members) or run (members rpctl launches)")
    # One threshold per protocol, in the unit its queue is counted in:
    # connections (TCP's accept queue) or bytes (UDP's receive queue).
    for key, proto, other in (("adaptive_queue", "tcp", "'adaptive_queue_bytes', in bytes"),
                              ("adaptive_queue_bytes", "udp", "'adaptive_queue', in connections")):
        listen = values["listen"]
        if key in raw and listen.proto != proto:
            raise _fail(path, lines.key(k, key), label, f"key '{key}'",
                        f"for {proto.upper()} groups only ({listen.text} is {listen.proto.upper()}: "
                        f"its threshold is {other})")
    for key in ("generations", "generation_by"):
        if key in raw and "run" in raw:
            raise _fail(path, lines.key(k, key), label, f"key '{key}'",
                        "for adopted groups only (a run group's members are restarted one by one: "
                        "rpctl restart, rpctl rollout)")
    if "quic_server_ids" in raw and ("run" in raw or values.get("quic") is not True):
        raise _fail(path, lines.key(k, "quic_server_ids"), label, "key 'quic_server_ids'",
                    "for adopted groups with quic = true only")
    if "run" in raw:
        values.setdefault("names", RUN_NAMES)
        try:
            check_format(values["names"], ("i",))
        except InvalidInput as e:
            raise _fail(path, lines.key(k, "names"), label, "key 'names'",
                        f"{e} (a run group's members are named before they start)") from None
    values["options"] = _options(path, lines, k, label, values)
    return GroupSpec(line=lines.group(k), **values)


def _options(path: str, lines: Lines, k: int, label: str, values: dict[str, Any]) -> GroupOptions:
    """The group's creation options, taken out of `values`: UDP only, and checked together."""
    given = {f: values.pop(f) for f in OPTION_FIELDS if f in values}
    if given and values["listen"].proto != "udp":
        key = next(iter(given))
        raise _fail(path, lines.key(k, key), label, f"key '{key}'",
                    f"for UDP groups only ({values['listen'].text} is TCP: the kernel places a connection once)")
    if given.get("flow_affinity") is False:
        for key in ("flow_table_size", "flow_idle_timeout"):
            if key in given:
                raise _fail(path, lines.key(k, key), label, f"key '{key}'",
                            "a group with flow_affinity = false has no flow table (leave the key out)")
    options = GroupOptions(**given)
    try:
        options.check()
    except InvalidInput as e:
        # Each key's value was checked alone: what is left is a pair that does not go together.
        if Param("balance") in e.args:
            key, hint = "balance", ""
        else:
            key, hint = "quic_server_id_length" if "quic_server_id_length" in given else next(iter(given)), \
                " (add quic = true)"
        raise _fail(path, lines.key(k, key), label, f"key '{key}'", option_message(e) + hint) from None
    return options


def loads(text: str, path: str = DEFAULT_PATH) -> Config:
    """The Config in `text` (read from `path`, which errors name)."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        msg = str(e)
        m = re.search(r"\(at line (\d+), column \d+\)", msg)
        line = int(m.group(1)) if m else 1
        raise _fail(path, line, "not valid TOML", re.sub(r"\s*\(at line \d+, column \d+\)", "", msg) or msg) from None
    lines = Lines(text)
    for key in doc:
        if key != "group":
            raise _fail(path, lines.top(key), f"key {key!r}", "unknown key (the file holds [[group]] tables)")
    raw_groups = doc.get("group", [])
    if not isinstance(raw_groups, list):
        raise _fail(path, lines.top("group"), "key 'group'", "write each group as a [[group]] table")
    groups: list[GroupSpec] = []
    for k, raw in enumerate(raw_groups):
        spec = _group(path, lines, k, raw)
        for other in groups:
            if other.name == spec.name:
                raise _fail(path, lines.key(k, "name"), f"group {spec.name!r}", "key 'name'",
                            f"a second group of this name (the first is at line {other.line})")
            if other.listen == spec.listen:
                raise _fail(path, lines.key(k, "listen"), f"group {spec.name!r}", "key 'listen'",
                            f"{spec.listen.text} is group {other.name!r}'s already (line {other.line})")
        groups.append(spec)
    return Config(path, tuple(groups))


def load(path: Optional[str] = None) -> Config:
    """Read and check the whole file; InvalidInput (one line, FILE:LINE: ...) when anything is wrong."""
    path = path or DEFAULT_PATH
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise NotFound(f"config file {path}: no such file") from None
    except IsADirectoryError:
        raise InvalidInput(f"config file {path}: is a directory") from None
    except PermissionError:
        from ..contract.errors import PermissionDenied

        raise PermissionDenied(f"config file {path}: permission denied") from None
    return loadb(raw, os.fspath(path))


def loadb(raw: bytes, path: str = DEFAULT_PATH) -> Config:
    """The Config in the bytes of a file (read from `path`, which errors name)."""
    try:
        text = raw.decode()
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise _fail(path, line, "not valid TOML", "the file is not UTF-8") from None
    return loads(text, path)
