"""Groups described in a TOML file (default /etc/rpctl/rpctl.toml), checked whole.

    [[group]]
    name = "web"
    listen = "tcp:127.0.0.1:8080"
    adopt = { comm = "nginx" }
    weights = { "nginx-1" = 3 }

load() returns a Config or raises InvalidInput with ONE line that names the
file, the line, the group and the key: `rpctl.toml:7: group 'web': key
'weights': weight of nginx-1: 20000 is out of range 0..10000`.  tomllib
gives values without positions, so the line is found in the text: the
`[[group]]` headers split it into ranges, and a key's line is the first
`key =` (or `[group.key]`) inside its group's range.

The keys of a group are GROUP_KEYS, one entry per key (its parser and its
default): a key that a later version understands is an unknown key here,
and adding one is adding an entry.
"""

from __future__ import annotations

import ipaddress
import os
import pwd
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, NamedTuple, Optional

from ..contract.errors import InvalidInput, NotFound
from ..kernel import sockets
from ..store.options import NONE_GIVEN, GroupOptions
from ..tables.adaptive import DEFAULT_INTERVAL_MS, DEFAULT_QUEUE, DEFAULT_QUEUE_BYTES, LEASE_MS, MIN_QUEUE_BYTES
from ..tables.naming import DEFAULT_FORMAT, check_format

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.9/3.10 only
    import tomli as tomllib

__all__ = [
    "DEFAULT_PATH",
    "GROUP_KEYS",
    "AdoptRule",
    "Config",
    "GroupSpec",
    "PinSpec",
    "RunSpec",
    "load",
    "loads",
    "parse_listen",
]

DEFAULT_PATH = "/etc/rpctl/rpctl.toml"
RUN_NAMES = "worker-{i}"  # the default member names of a `run` group, as `rpctl run` names them
COMM_LEN = 15  # the kernel keeps 15 bytes of a process name (TASK_COMM_LEN - 1)


@dataclass(frozen=True)
class AdoptRule:
    """Whose listeners are members: every field given must match the serving process."""

    comm: Optional[str] = None    # its name, as /proc/PID/comm (15 bytes at most)
    exe: Optional[str] = None     # the path of its executable, as /proc/PID/exe
    uid: Optional[int] = None     # its effective user id
    cgroup: Optional[str] = None  # its cgroup v2 path, or one of its parents: "/system.slice/nginx.service"

    def matches(self, comm: str, exe: Optional[str], uid: Optional[int], cgroup: Optional[str]) -> bool:
        if self.comm is not None and comm != self.comm:
            return False
        if self.exe is not None and exe != self.exe:
            return False
        if self.uid is not None and uid != self.uid:
            return False
        if self.cgroup is not None:
            if cgroup is None:
                return False
            parent = self.cgroup.rstrip("/")
            if cgroup != self.cgroup and not cgroup.startswith(parent + "/"):
                return False
        return True

    def mismatch(self, comm: str, exe: Optional[str], uid: Optional[int], cgroup: Optional[str]) -> str:
        """Why a process does not match (the first field that differs), "" when it does."""
        for key, want, have in (("comm", self.comm, comm), ("exe", self.exe, exe), ("uid", self.uid, uid),
                                ("cgroup", self.cgroup, cgroup)):
            if want is not None and not AdoptRule(**{key: want}).matches(comm, exe, uid, cgroup):
                return f"{key} {have!r} is not {want!r}"
        return ""


@dataclass(frozen=True)
class RunSpec:
    """Members launched as `rpctl run` launches them (by `rpctl serve`)."""

    command: tuple[str, ...]
    count: int
    backoff_initial: float = 0.5  # seconds before the first restart of a child that died
    backoff_max: float = 10.0     # the longest wait between restarts


@dataclass(frozen=True)
class PinSpec:
    mode: str = "weighted"  # "weighted", "cpu" or "rss"
    dev: str = ""           # rss: the device whose receive queues pin connections

    @property
    def text(self) -> str:
        return f"rss:{self.dev}" if self.mode == "rss" else self.mode


WEIGHTED = PinSpec()


@dataclass(frozen=True)
class GroupSpec:
    name: str
    listen: sockets.EndpointKey
    adopt: Optional[AdoptRule] = None
    run: Optional[RunSpec] = None
    names: str = DEFAULT_FORMAT
    weights: Mapping[str, int] = field(default_factory=dict)
    default_weight: int = 1
    drain: tuple[str, ...] = ()
    pin: PinSpec = WEIGHTED
    adaptive: bool = False  # serve throttles a member whose queue builds alone (controller/tables/adaptive.py)
    adaptive_queue: int = DEFAULT_QUEUE  # TCP: queued connections
    adaptive_queue_bytes: int = DEFAULT_QUEUE_BYTES  # UDP: bytes in the receive queue
    adaptive_interval_ms: int = DEFAULT_INTERVAL_MS
    options: GroupOptions = NONE_GIVEN  # creation options the file gives (None: not given)
    line: int = 0  # of its [[group]] header in the file


@dataclass(frozen=True)
class Config:
    path: str
    groups: tuple[GroupSpec, ...]

    def group(self, name: str) -> GroupSpec:
        for g in self.groups:
            if g.name == name:
                return g
        raise NotFound(f"{self.path}: no group {name!r}")


# Parsers of the keys: each takes the TOML value and returns the spec's value,
# or raises _Bad(message[, subkey]).


class _Bad(Exception):
    def __init__(self, message: str, subkey: str = ""):
        super().__init__(message)
        self.message = message
        self.subkey = subkey


def _type_name(value: object) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "a boolean", list: "an array",
            dict: "a table"}.get(type(value), type(value).__name__)


def _want(value: object, kind: type, what: str) -> Any:
    if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
        raise _Bad(f"{_type_name(value)} where {what} belongs")
    return value


def _string(value: object) -> str:
    return _want(value, str, "a string")


def parse_listen(text: str) -> sockets.EndpointKey:
    """"tcp:127.0.0.1:8080", "udp:[::1]:53" -> EndpointKey; ValueError saying what is wrong."""
    proto, sep, hostport = text.partition(":")
    if not sep or proto not in sockets.PROTO_NUMBERS:
        raise ValueError(f"{text!r}: write PROTO:ADDRESS:PORT with tcp or udp (tcp:127.0.0.1:8080, udp:[::1]:53)")
    addr, port = sockets.parse_hostport(hostport)
    if port == 0:
        raise ValueError(f"{text!r}: port 0 is no port to steer (1..65535)")
    return sockets.EndpointKey(proto, sockets.family_of(addr), ipaddress.ip_address(addr).compressed, port)


def _listen(value: object) -> sockets.EndpointKey:
    text = _string(value)
    try:
        return parse_listen(text)
    except ValueError as e:
        msg = str(e)
        raise _Bad(msg if msg.startswith(repr(text)) else f"{text!r}: {msg}") from None


def _name(value: object) -> str:
    from ..store.state import check_group_name

    try:
        return check_group_name(_string(value))
    except InvalidInput as e:
        raise _Bad(str(e)) from None


def _uid(value: object) -> int:
    if isinstance(value, str):
        try:
            return pwd.getpwnam(value).pw_uid
        except KeyError:
            raise _Bad(f"no user {value!r} on this machine", "uid") from None
    uid = _want(value, int, "a user id or name")
    if uid < 0:
        raise _Bad(f"uid {uid} is negative", "uid")
    return uid


def _adopt(value: object) -> AdoptRule:
    table = _want(value, dict, "a table { comm, exe, uid, cgroup }")
    kinds: dict[str, Callable[[object], object]] = {"comm": _string, "exe": _string, "uid": _uid, "cgroup": _string}
    out = {}
    for key, v in table.items():
        if key not in kinds:
            raise _Bad(f"unknown key '{key}' (use {', '.join(kinds)})", key)
        try:
            out[key] = kinds[key](v)
        except _Bad as e:
            raise _Bad(e.message, key) from None
    if not out:
        raise _Bad("give at least one of comm, exe, uid, cgroup (an empty rule would admit every process)")
    if "comm" in out and not 0 < len(out["comm"].encode()) <= COMM_LEN:
        raise _Bad(f"comm {out['comm']!r}: the kernel keeps 1..{COMM_LEN} bytes of a process name", "comm")
    for key in ("exe", "cgroup"):
        if key in out and not out[key].startswith("/"):
            raise _Bad(f"{key} {out[key]!r} is not an absolute path", key)
    return AdoptRule(**out)


def _run(value: object) -> RunSpec:
    from .launcher import MAX_COUNT

    table = _want(value, dict, "a table { command, count }")
    known = ("command", "count", "backoff_initial", "backoff_max")
    for key in table:
        if key not in known:
            raise _Bad(f"unknown key '{key}' (use {', '.join(known)})", key)
    if "command" not in table or "count" not in table:
        raise _Bad("give both command (an array of strings) and count")
    command = table["command"]
    if not isinstance(command, list) or not command or not all(isinstance(a, str) for a in command) or not command[0]:
        raise _Bad("command must be a non-empty array of strings", "command")
    count = table["count"]
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_COUNT:
        raise _Bad(f"count {count!r} is out of range 1..{MAX_COUNT}", "count")
    backoff = {}
    for key, default in (("backoff_initial", 0.5), ("backoff_max", 10.0)):
        v = table.get(key, default)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
            raise _Bad(f"{v!r} is not a positive number of seconds", key)
        backoff[key] = float(v)
    if backoff["backoff_initial"] > backoff["backoff_max"]:
        raise _Bad("backoff_initial is longer than backoff_max", "backoff_initial")
    return RunSpec(tuple(command), count, **backoff)


def _names(value: object) -> str:
    text = _string(value)
    try:
        check_format(text)
    except InvalidInput as e:
        raise _Bad(str(e)) from None
    return text


def _weight_of(name: str, value: object) -> int:
    from ..store.group import check_weight

    try:
        return check_weight(name, value)
    except InvalidInput as e:
        raise _Bad(str(e)) from None


def _weights(value: object) -> dict[str, int]:
    table = _want(value, dict, 'a table { "NAME" = WEIGHT }')
    out = {}
    for name, w in table.items():
        try:
            out[name] = _weight_of(name, w)
        except _Bad as e:
            raise _Bad(e.message, name) from None
    return out


def _drain(value: object) -> tuple[str, ...]:
    names = _want(value, list, 'an array of member names ["nginx-2"]')
    if not all(isinstance(n, str) for n in names):
        raise _Bad('an array of member names ["nginx-2"] holds only strings')
    return tuple(names)


_DEV_RE = re.compile(r"^[^\s/:]{1,15}$")


def _pin(value: object) -> PinSpec:
    text = _string(value)
    if text in ("cpu", "weighted"):
        return PinSpec(text)
    mode, sep, dev = text.partition(":")
    if mode == "rss" and sep and _DEV_RE.match(dev):
        return PinSpec("rss", dev)
    raise _Bad(f"{text!r}: use \"cpu\", \"rss:DEVICE\" (e.g. \"rss:eth0\") or \"weighted\"")


def _bool(value: object) -> bool:
    return _want(value, bool, "true or false")


def _whole(low: int, high: int, unit: str) -> Callable[[object], int]:
    def parse(value: object) -> int:
        n = _want(value, int, f"a whole number of {unit}")
        if not low <= n <= high:
            raise _Bad(f"{n} is out of range {low}..{high}")
        return n
    return parse


def _option(name: str, kind: type, what: str) -> Callable[[object], Any]:
    """The parser of creation option `name` (a GroupOptions field), checked by GroupOptions.check()."""

    def parse(value: object) -> Any:
        _want(value, kind, what)
        # A server id length is checked alone here; that it needs `quic` is checked with the group's keys.
        given = {name: value, "quic": True} if name == "quic_server_id_length" else {name: value}
        try:
            GroupOptions(**given).check()
        except InvalidInput as e:
            raise _Bad(_plain(e)) from None
        return value

    return parse


def _plain(e: InvalidInput) -> str:
    """The message of a GroupOptions error, its trailing "(flag)" left out: the file's key is named already."""
    return re.sub(r"\s*\([^()]*\)$", "", str(e))


# The GroupSpec fields that are creation options: gathered into its GroupOptions.
OPTION_FIELDS = ("flow_affinity", "flow_table_size", "flow_idle_timeout", "quic", "quic_server_id_length")


class Key(NamedTuple):
    parse: Callable[[object], Any]
    field: str  # the GroupSpec field it sets


# One entry per key of a [[group]] table.
GROUP_KEYS: Mapping[str, Key] = {
    "name": Key(_name, "name"),
    "listen": Key(_listen, "listen"),
    "adopt": Key(_adopt, "adopt"),
    "run": Key(_run, "run"),
    "names": Key(_names, "names"),
    "weight": Key(lambda v: _weight_of("every member", v), "default_weight"),
    "weights": Key(_weights, "weights"),
    "drain": Key(_drain, "drain"),
    "pin": Key(_pin, "pin"),
    "adaptive": Key(_bool, "adaptive"),
    # A queue of 1 would throttle at every accept's wait; past 65535 no listen backlog reaches it.
    "adaptive_queue": Key(_whole(2, 65535, "queued connections"), "adaptive_queue"),
    # UDP: 1 GiB is past any receive buffer (SO_RCVBUF is capped by net.core.rmem_max).
    "adaptive_queue_bytes": Key(_whole(MIN_QUEUE_BYTES, 1 << 30, "bytes"), "adaptive_queue_bytes"),
    # Well under the lease, which each sample renews.
    "adaptive_interval_ms": Key(_whole(5, LEASE_MS // 4, "milliseconds"), "adaptive_interval_ms"),
    "flow_affinity": Key(_option("flow_affinity", bool, "true or false"), "flow_affinity"),
    "flow_table_size": Key(_option("flow_table_size", int, "a number of flows"), "flow_table_size"),
    "flow_idle_timeout": Key(_option("flow_idle_timeout", (int, float), "seconds"), "flow_idle_timeout"),
    "quic": Key(_option("quic", bool, "true or false"), "quic"),
    "quic_server_id_length": Key(_option("quic_server_id_length", int, "a number of bytes"), "quic_server_id_length"),
}
REQUIRED = ("name", "listen")


# Lines ------------------------------------------------------------------------

_HEADER_RE = re.compile(r"^\s*\[\[\s*group\s*\]\]")
_TABLE_RE = re.compile(r"^\s*\[")


class _Lines:
    """Where things are in the text: the [[group]] headers and the keys inside them."""

    def __init__(self, text: str):
        self.lines = text.splitlines()
        self.headers = [n for n, line in enumerate(self.lines, 1) if _HEADER_RE.match(line)]

    def group(self, k: int) -> int:
        return self.headers[k] if k < len(self.headers) else 1

    def key(self, k: int, key: str, subkey: str = "") -> int:
        """The line of `key` (or of `key`'s `subkey`) in group k; its header's line when not found."""
        if k < len(self.headers):
            start = self.headers[k]
            end = self.headers[k + 1] - 1 if k + 1 < len(self.headers) else len(self.lines)
        else:
            start, end = 1, len(self.lines)
        return self._find(start, end, key, subkey) or (start if k < len(self.headers) else 1)

    def top(self, key: str) -> int:
        """The line of a key outside every [[group]] (before the first, or in a table of its own)."""
        end = self.headers[0] - 1 if self.headers else len(self.lines)
        for n in range(1, len(self.lines) + 1):
            line = self.lines[n - 1]
            if (n <= end and _key_re(key).match(line)) or re.match(rf"^\s*\[+\s*\"?{re.escape(key)}\"?\s*[\].]", line):
                return n
        return 1

    def _find(self, start: int, end: int, key: str, subkey: str) -> int:
        key_line = 0
        for n in range(start, end + 1):
            line = self.lines[n - 1]
            if not key_line and (_key_re(key).match(line) or re.match(
                    rf"^\s*\[\s*group\s*\.\s*\"?{re.escape(key)}\"?\s*\]", line)):
                key_line = n
                if not subkey:
                    return n
            if key_line and subkey:
                if re.search(rf"(^|[{{,\s])\"?{re.escape(subkey)}\"?\s*=", line):
                    return n
                if n > key_line and _TABLE_RE.match(line):
                    break
        return key_line


def _key_re(key: str) -> re.Pattern:
    return re.compile(rf"^\s*(\"{re.escape(key)}\"|'{re.escape(key)}'|{re.escape(key)})\s*[=.]")


# Loading ----------------------------------------------------------------------


def _fail(path: str, line: int, *parts: str) -> InvalidInput:
    return InvalidInput(": ".join((f"{path}:{line}", *parts)))


def _group_label(raw: Mapping[str, object], k: int) -> str:
    name = raw.get("name")
    return f"group {name!r}" if isinstance(name, str) else f"group #{k + 1}"


def _group(path: str, lines: _Lines, k: int, raw: object) -> GroupSpec:
    if not isinstance(raw, dict):
        raise _fail(path, lines.group(k), f"group #{k + 1}", "is not a table")
    label = _group_label(raw, k)
    values: dict[str, Any] = {}
    for key, value in raw.items():
        entry = GROUP_KEYS.get(key)
        if entry is None:
            raise _fail(path, lines.key(k, key), label, f"key '{key}'", f"unknown key (known: {', '.join(GROUP_KEYS)})")
        try:
            values[entry.field] = entry.parse(value)
        except _Bad as e:
            where = f"key '{key}.{e.subkey}'" if e.subkey else f"key '{key}'"
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
    if "run" in raw:
        values.setdefault("names", RUN_NAMES)
        try:
            check_format(values["names"], ("i",))
        except InvalidInput as e:
            raise _fail(path, lines.key(k, "names"), label, "key 'names'",
                        f"{e} (a run group's members are named before they start)") from None
    values["options"] = _options(path, lines, k, label, values)
    return GroupSpec(line=lines.group(k), **values)


def _options(path: str, lines: _Lines, k: int, label: str, values: dict[str, Any]) -> GroupOptions:
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
        key = "quic_server_id_length" if "quic_server_id_length" in given else next(iter(given))
        raise _fail(path, lines.key(k, key), label, f"key '{key}'", _plain(e) + " (add quic = true)") from None
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
    lines = _Lines(text)
    for key in doc:
        if key != "group":
            raise _fail(path, lines.top(key), f"key '{key}'", "unknown key (the file holds [[group]] tables)")
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
    try:
        text = raw.decode()
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise _fail(path, line, "not valid TOML", "the file is not UTF-8") from None
    return loads(text, os.fspath(path))
