"""The keys of a [[group]] table: GROUP_KEYS, one entry per key (its parser and the GroupSpec field it sets).

A parser takes the TOML value and returns the spec's value, or raises
BadValue(message[, subkey]); the loader (controller/ops/config.py) adds the
file, the line, the group and the key.  A key that a later version
understands is an unknown key here, and adding one is adding an entry.
"""

from __future__ import annotations

import pwd
import re
from typing import Any, Callable, Mapping, NamedTuple

from ..contract.errors import InvalidInput
from ..kernel import sockets
from ..contract.abi import RP_QUIC_MAX_SID_LEN
from ..store import options as group_options
from ..store.options import GroupOptions
from ..store.policy import DEFAULT_WEIGHT, MAX_WEIGHT
from ..tables.adaptive import DEFAULT_INTERVAL_MS, DEFAULT_QUEUE, DEFAULT_QUEUE_BYTES, LEASE_MS, MIN_QUEUE_BYTES
from ..tables.naming import DEFAULT_FORMAT, check_format
from ..tables.server_generations import NEWEST, Rollout
from ..kernel.server_root import BY as GENERATION_BY
from .config_spec import AdoptRule, PinSpec, RunSpec
from .run_defaults import BACKOFF_INITIAL, BACKOFF_MAX, MAX_COUNT, RUN_NAMES

__all__ = [
    "COMM_LEN",
    "GROUP_KEYS",
    "OPTION_FIELDS",
    "REQUIRED",
    "BadValue",
    "Key",
    "option_message",
    "parse_endpoint",
]

COMM_LEN = 15  # the kernel keeps 15 bytes of a process name (TASK_COMM_LEN - 1)


class BadValue(Exception):
    """A key's value refused: what is wrong, and the subkey it is about ("" for the key itself)."""

    def __init__(self, message: str, subkey: str = ""):
        super().__init__(message)
        self.message = message
        self.subkey = subkey


def _type_name(value: object) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "a boolean", list: "an array",
            dict: "a table"}.get(type(value), type(value).__name__)


def _want(value: object, kind: type, what: str) -> Any:
    if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
        raise BadValue(f"{_type_name(value)} where {what} belongs")
    return value


def _string(value: object) -> str:
    return _want(value, str, "a string")


def parse_endpoint(text: str) -> sockets.EndpointKey:
    """PROTO:ADDRESS:PORT ("tcp:127.0.0.1:8080", "udp:[::1]:53") -> EndpointKey; ValueError saying what is wrong."""
    proto, sep, hostport = text.partition(":")
    if not sep or proto not in sockets.PROTO_NUMBERS:
        raise ValueError(f"{text!r}: write PROTO:ADDRESS:PORT with tcp or udp (tcp:127.0.0.1:8080, udp:[::1]:53)")
    addr, port = sockets.parse_hostport(hostport)
    if port == 0:
        raise ValueError(f"{text!r}: port 0 is no port to steer (1..65535)")
    return sockets.endpoint_key(proto, addr, port)


def _listen(value: object) -> sockets.EndpointKey:
    text = _string(value)
    try:
        return parse_endpoint(text)
    except ValueError as e:
        msg = str(e)
        raise BadValue(msg if msg.startswith(repr(text)) else f"{text!r}: {msg}") from None


def _name(value: object) -> str:
    from ..store.state import check_group_name

    try:
        return check_group_name(_string(value))
    except InvalidInput as e:
        raise BadValue(str(e)) from None


def _uid(value: object) -> int:
    if isinstance(value, str):
        try:
            return pwd.getpwnam(value).pw_uid
        except KeyError:
            raise BadValue(f"no user {value!r} on this machine", "uid") from None
    uid = _want(value, int, "a user id or name")
    if uid < 0:
        raise BadValue(f"uid {uid} is negative", "uid")
    return uid


def _adopt(value: object) -> AdoptRule:
    table = _want(value, dict, "a table { comm, exe, uid, cgroup }")
    kinds: dict[str, Callable[[object], object]] = {"comm": _string, "exe": _string, "uid": _uid, "cgroup": _string}
    out = {}
    for key, v in table.items():
        if key not in kinds:
            raise BadValue(f"unknown key {key!r} (use {', '.join(kinds)})", key)
        try:
            out[key] = kinds[key](v)
        except BadValue as e:
            raise BadValue(e.message, key) from None
    if not out:
        raise BadValue("give at least one of comm, exe, uid, cgroup (an empty rule would admit every process)")
    if "comm" in out and not 0 < len(out["comm"].encode()) <= COMM_LEN:
        raise BadValue(f"comm {out['comm']!r}: the kernel keeps 1..{COMM_LEN} bytes of a process name", "comm")
    for key in ("exe", "cgroup"):
        if key in out and not out[key].startswith("/"):
            raise BadValue(f"{key} {out[key]!r} is not an absolute path", key)
    return AdoptRule(**out)


def _run(value: object) -> RunSpec:
    table = _want(value, dict, "a table { command, count }")
    known = ("command", "count", "backoff_initial", "backoff_max")
    for key in table:
        if key not in known:
            raise BadValue(f"unknown key {key!r} (use {', '.join(known)})", key)
    if "command" not in table or "count" not in table:
        raise BadValue("give both command (an array of strings) and count")
    command = table["command"]
    if not isinstance(command, list) or not command or not all(isinstance(a, str) for a in command) or not command[0]:
        raise BadValue("command must be a non-empty array of strings", "command")
    count = table["count"]
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_COUNT:
        raise BadValue(f"count {count!r} is out of range 1..{MAX_COUNT}", "count")
    backoff = {}
    for key, default in (("backoff_initial", BACKOFF_INITIAL), ("backoff_max", BACKOFF_MAX)):
        v = table.get(key, default)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
            raise BadValue(f"{v!r} is not a positive number of seconds", key)
        backoff[key] = float(v)
    if backoff["backoff_initial"] > backoff["backoff_max"]:
        raise BadValue("backoff_initial is longer than backoff_max", "backoff_initial")
    return RunSpec(tuple(command), count, **backoff)


def _names(value: object) -> str:
    text = _string(value)
    try:
        check_format(text)
    except InvalidInput as e:
        raise BadValue(str(e)) from None
    return text


def _weight_of(name: str, value: object) -> int:
    from ..store.policy import check_weight

    try:
        return check_weight(name, value)
    except InvalidInput as e:
        raise BadValue(str(e)) from None


def _weights(value: object) -> dict[str, int]:
    table = _want(value, dict, 'a table { "NAME" = WEIGHT }')
    out = {}
    for name, w in table.items():
        try:
            out[name] = _weight_of(name, w)
        except BadValue as e:
            raise BadValue(e.message, name) from None
    return out


def _drain(value: object) -> tuple[str, ...]:
    names = _want(value, list, 'an array of member names ["nginx-2"]')
    if not all(isinstance(n, str) for n in names):
        raise BadValue('an array of member names ["nginx-2"] holds only strings')
    return tuple(names)


_DEV_RE = re.compile(r"[^\s/:]{1,15}")  # a whole device name: fullmatch


def _pin(value: object) -> PinSpec:
    text = _string(value)
    if text in ("cpu", "weighted"):
        return PinSpec(text)
    mode, sep, dev = text.partition(":")
    if mode == "rss" and sep and _DEV_RE.fullmatch(dev):
        return PinSpec("rss", dev)
    raise BadValue(f"{text!r}: use \"cpu\", \"rss:DEVICE\" (e.g. \"rss:eth0\") or \"weighted\"")


def _generations(value: object) -> Rollout:
    if value == "newest":
        return NEWEST
    if not isinstance(value, dict):
        raise BadValue(f'{value!r}: use "newest" or {{ canary = PERCENT }}')
    for key in value:
        if key != "canary":
            raise BadValue(f"unknown key {key!r} (use canary)", key)
    if "canary" not in value:
        raise BadValue("give canary = PERCENT (the newest generation's share of new work)")
    percent = value["canary"]
    if isinstance(percent, bool) or not isinstance(percent, (int, float)) or not 0 < percent < 100:
        raise BadValue(f"{percent!r} is not a percent between 0 and 100 (both left out)", "canary")
    return Rollout(float(percent))


def _generation_by(value: object) -> str:
    text = _string(value)
    if text not in GENERATION_BY:
        choices = " or ".join(f'"{b}"' for b in GENERATION_BY)
        raise BadValue(f"{text!r}: use {choices}")
    return text


def _quic_server_ids(value: object) -> bool:
    text = _string(value)
    if text not in ("assigned", "cookie"):
        raise BadValue(f'{text!r}: use "assigned" or "cookie"')
    return text == "cookie"


def _bool(value: object) -> bool:
    return _want(value, bool, "true or false")


def _whole(low: int, high: int, unit: str) -> Callable[[object], int]:
    def parse(value: object) -> int:
        n = _want(value, int, f"a whole number of {unit}")
        if not low <= n <= high:
            raise BadValue(f"{n} is out of range {low}..{high}")
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
            raise BadValue(option_message(e)) from None
        return value

    return parse


def option_message(e: InvalidInput) -> str:
    """The message of a GroupOptions error, its trailing "(flag)" left out: the file's key is named already."""
    return re.sub(r"\s*\([^()]*\)$", "", str(e))


# The GroupSpec fields that are creation options: gathered into its GroupOptions.
OPTION_FIELDS = ("flow_affinity", "flow_table_size", "flow_idle_timeout", "quic", "quic_server_id_length", "balance")


class Key(NamedTuple):
    parse: Callable[[object], Any]
    field: str  # the GroupSpec field it sets
    doc: str    # what it is, for rpctl.toml(5) (cli/manpage.py); `x` marks a literal


# The creation options' docs start alike: a live group keeps its own (config.py refuses others).
FIXED = "UDP only, fixed at creation"

# One entry per key of a [[group]] table.
GROUP_KEYS: Mapping[str, Key] = {
    "name": Key(_name, "name", "the group's name: 1-63 letters, digits, `_`, `-`"),
    "listen": Key(_listen, "listen",
                  "the endpoint it steers, `proto:address:port`: `tcp:127.0.0.1:8080`, `udp:[::1]:53` "
                  "(literal addresses only)"),
    "adopt": Key(_adopt, "adopt",
                 "which listeners of the endpoint are members: those whose serving process (the one whose "
                 "epoll watches the socket, as discover tells it) matches every field given: `comm` "
                 "(process name, as in /proc/PID/comm), `exe` (absolute path of its executable), `uid` "
                 "(effective user, a number or a name), `cgroup` (its cgroup v2 path, or a parent of it: "
                 "`/system.slice/nginx.service`)"),
    "run": Key(_run, "run",
               "members rpctl launches instead, as `rpctl run` does: `command` (array of strings), `count` "
               f"(1..{MAX_COUNT}), `backoff_initial` and `backoff_max` (seconds between restarts, "
               f"{BACKOFF_INITIAL:g} and {BACKOFF_MAX:g} by default); serve launches and keeps these groups, "
               "apply reports them as kept by serve and leaves them alone"),
    "names": Key(_names, "names",
                 f"member names: `{{comm}}`, `{{pid}}`, `{{fd}}`, `{{i}}`; default `{DEFAULT_FORMAT}` (`{RUN_NAMES}` "
                 "for a `run` group, whose names may use only `{i}`); `{i}` is the lowest number from 1 that no "
                 "member has when a listener joins, and stays with that socket"),
    "weight": Key(lambda v: _weight_of("every member", v), "default_weight",
                  f"the weight of every member `weights` does not name (default {DEFAULT_WEIGHT}; 0..{MAX_WEIGHT})"),
    "weights": Key(_weights, "weights", 'weights by member name: `{ "nginx-1" = 3 }`'),
    "drain": Key(_drain, "drain", 'member names to drain: `["nginx-2"]`; a member not listed is undrained'),
    "pin": Key(_pin, "pin",
               '`"cpu"` (each connection to the member of its CPU, from the members\' affinity), `"rss:DEV"` '
               '(each to the member of the receive queue of device DEV it arrived on, by the NIC\'s RSS hash), '
               'or `"weighted"` (the default)'),
    "adaptive": Key(_bool, "adaptive",
                    "`true`: serve throttles a member whose queue builds while another's stays low; "
                    "default `false`"),
    # A queue of 1 would throttle at every accept's wait; past 65535 no listen backlog reaches it.
    "adaptive_queue": Key(_whole(2, 65535, "queued connections"), "adaptive_queue",
                          "TCP groups: the accept-queue depth (connections) that throttles a member "
                          f"(default {DEFAULT_QUEUE}; 2..65535); it is released at a quarter of it"),
    # UDP: 1 GiB is past any receive buffer (SO_RCVBUF is capped by net.core.rmem_max).
    "adaptive_queue_bytes": Key(_whole(MIN_QUEUE_BYTES, 1 << 30, "bytes"), "adaptive_queue_bytes",
                                "UDP groups: the receive-queue size in bytes that throttles a member "
                                f"(default {DEFAULT_QUEUE_BYTES}; {MIN_QUEUE_BYTES}..{1 << 30}); "
                                "it is released at a quarter of it"),
    # Well under the lease, which each sample renews.
    "adaptive_interval_ms": Key(_whole(5, LEASE_MS // 4, "milliseconds"), "adaptive_interval_ms",
                                "how often serve samples the members' queues, in ms "
                                f"(default {DEFAULT_INTERVAL_MS}; 5..{LEASE_MS // 4})"),
    "generations": Key(_generations, "rollout",
                       'how new work moves to a new start of the server (a generation): `"newest"` (all of it '
                       "to the newest generation at once, the older ones drain) or `{ canary = 5 }` (the newest "
                       "takes 5 % of it until promoted, then all, or rolled back, then none); adopted groups only; "
                       "without it members have no generation"),
    "generation_by": Key(_generation_by, "generation_by",
                         'with `generations`: `"process"` (the default: listeners whose serving processes have '
                         "one master, the topmost process above them that holds a listener of the endpoint, "
                         'are one generation; a reload keeps it) or `"cgroup"` (one generation per cgroup: '
                         "`app@blue` and `app@green` units)"),
    "quic_server_ids": Key(_quic_server_ids, "quic_ids_from_cookie",
                           'with `quic = true`, adopted groups: `"assigned"` (the default: rpctl gives each member '
                           'the lowest free id; a `run` group\'s children are told theirs) or `"cookie"` (each '
                           "member's id is the low bytes of its socket's SO_COOKIE, which the server reads itself "
                           "and puts in its connection ids; use 3 or 4 bytes of server id)"),
    "flow_affinity": Key(_option("flow_affinity", bool, "true or false"), "flow_affinity",
                         f"{FIXED}: `true` (the default) keeps each flow on its member in a "
                         "flow table, `false` places every datagram by the weights"),
    "flow_table_size": Key(_option("flow_table_size", int, "a number of flows"), "flow_table_size",
                           f"{FIXED}: flows the flow table holds, a power of two in "
                           f"{group_options.MIN_FLOW_TABLE_SIZE}..{group_options.MAX_FLOW_TABLE_SIZE} (default "
                           f"{group_options.DEFAULT_FLOW_TABLE_SIZE}, 16 bytes of kernel memory a flow)"),
    "flow_idle_timeout": Key(_option("flow_idle_timeout", (int, float), "seconds"), "flow_idle_timeout",
                             f"{FIXED}: seconds after which a silent flow is forgotten, "
                             f"{group_options.MIN_FLOW_IDLE_TIMEOUT:g}..{group_options.MAX_FLOW_IDLE_TIMEOUT:g} "
                             f"(default {group_options.DEFAULT_FLOW_IDLE_TIMEOUT:g})"),
    "quic": Key(_option("quic", bool, "true or false"), "quic",
                f"{FIXED}: `true` routes QUIC packets by the server id in their connection "
                "id (default `false`); a `run` group's children get their member's id in RPCTL_QUIC_SERVER_ID"),
    "quic_server_id_length": Key(_option("quic_server_id_length", int, "a number of bytes"), "quic_server_id_length",
                                 f"{FIXED}, with `quic = true`: bytes of a QUIC-LB server id, "
                                 f"1..{RP_QUIC_MAX_SID_LEN} (default 1)"),
    "balance": Key(_option("balance", str, " or ".join(f'"{b}"' for b in group_options.BALANCES)), "balance",
                   f'{FIXED}: `"{group_options.HASH}"` (the default) places by the hash of a flow\'s addresses and '
                   f'ports, `"{group_options.DATAGRAM}"` places each datagram at random by the weights, so that one '
                   "sender's datagrams spread over the members (a syslog, NetFlow or DNS forwarder); without flow "
                   "affinity (off by default then) or QUIC routing"),
}
REQUIRED = ("name", "listen")
