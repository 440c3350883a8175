"""The read model fed by a Prometheus server instead of this host's maps.

Every host runs `rpctl metrics`; Prometheus scrapes them all.  Through its
HTTP API (instant queries, /api/v1/query) this module builds the same
GroupView and MemberView that a local read builds, one per group and scrape
target (`instance`), so that status, its JSON and the dashboard show a fleet
with the code that shows one host.

A group seen within the last hour whose exporter Prometheus cannot scrape
now (or that cannot read the pinned state) is a view marked `unreachable`,
without members: it is what most needs a look.

What Prometheus cannot know is left empty: a member's pid, fd, cookie and
index (indexes are given in name order), the view's table generation, a
server generation's verdict (promoted, rolled back), who holds an unmanaged
listener (only how many there are).  Server generations are built from the
members as a local read builds them (generation_views): each member's
generation, state and weight, and which generation is a canary.  What a local read computes
since the last publish comes from rate() over a window the caller names:
each member's connections (datagrams) per second and its observed share of
its group's.  Target shares are computed from the weights, as locally.

Only the standard library: urllib and json.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import re
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Optional

from ..contract.errors import InvalidInput, NotFound, RpctlError, WaitTimeout
from ..contract.refs import Param
from ..kernel.sockets import family_of, parse_hostport
from ..store.options import HASH
from ..store.policy import MAX_WEIGHT
from .generation_views import generation_views
from .views import (
    DRAINED,
    DRAINING,
    GONE,
    GROUP_COUNTERS,
    MEMBER_COUNTERS,
    THROTTLED,
    GroupView,
    MemberView,
    UnmanagedListener,
    set_target_shares,
)

__all__ = ["DEFAULT_WINDOW", "PrometheusApi", "Sample", "fleet_views", "parse_answer", "parse_match", "parse_window",
           "read_fleet"]

DEFAULT_WINDOW = "1m"
LOOKBACK = "1h"  # how long a group whose exporter went down is still shown as such

# A Prometheus duration, as rate() takes it: 30s, 1m, 1h30m.
_DURATION = re.compile(r"([0-9]+(ms|s|m|h|d|w|y))+")


@dataclass(frozen=True)
class Sample:
    """One series of an instant vector: its labels and value."""

    labels: dict[str, str]
    value: float


# What `throttled` says of a member Prometheus has as throttled: the exporter publishes whether,
# not why (a reason in a label would start a new series at every throttle).
THROTTLED_REASON = "its reason is not in the metrics"


def parse_window(window: str) -> str:
    """A rate() window as Prometheus writes durations ("1m", "90s"); InvalidInput otherwise."""
    if not _DURATION.fullmatch(window or ""):
        raise InvalidInput(Param("window", "read_fleet"),
                           f" {window!r} is not a Prometheus duration such as 30s, 1m or 1h")
    return window


def parse_match(match: Optional[str]) -> str:
    """A series selector's label matchers, `{job="rpctl",instance=~"web-.*"}` with or without its
    braces, -> what goes between the braces of every query ("" for none).  Prometheus checks
    the matchers themselves (a bad one is InvalidInput from the query)."""
    text = (match or "").strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1].strip()
    if "{" in text or "}" in text:
        raise InvalidInput(Param("match", "read_fleet"), f" {match!r} is not label matchers such as "
                           '{instance=~"web-.*",group="api"}')
    return text


MAX_ANSWER = 256 << 20  # bytes of one answer: a fleet's every series is far less


def urlopen_within(request: urllib.request.Request, timeout: float):
    """urllib's urlopen, whose sockets are shut down `timeout` seconds after the call: a socket's
    timeout bounds each wait for the server, this bounds them all (a server that answers a byte
    at a time, within each wait, does not hold rpctl).  The reply's close() ends the watch."""
    opened: list[socket.socket] = []

    def watched(base: type) -> type:
        class Connection(base):
            def connect(self) -> None:
                super().connect()
                opened.append(self.sock)
        return Connection

    class Http(urllib.request.HTTPHandler):
        def http_open(self, req):
            return self.do_open(watched(http.client.HTTPConnection), req)

    class Https(urllib.request.HTTPSHandler):
        def https_open(self, req):
            return self.do_open(watched(http.client.HTTPSConnection), req, context=self._context)

    def shut() -> None:
        for sock in opened:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    timer = threading.Timer(timeout, shut)
    timer.daemon = True
    timer.start()
    try:
        reply = urllib.request.build_opener(Http, Https).open(request, timeout=timeout)
    except BaseException:
        timer.cancel()
        raise
    close = reply.close

    def close_and_stop() -> None:
        timer.cancel()
        close()

    reply.close = close_and_stop
    return reply


class PrometheusApi:
    """Instant queries against one Prometheus server.  `opener` stands for urllib's
    urlopen (tests pass one that answers recorded responses); the default one gives up
    on a query after `timeout` seconds, however the server trickles its answer."""

    def __init__(self, url: str, timeout: float = 10.0, opener: Optional[Callable] = None,
                 max_answer: int = MAX_ANSWER):
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise InvalidInput(Param("url", "read_fleet"),
                               f" {url!r} is not the http:// or https:// URL of a Prometheus server")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.opener = opener or urlopen_within
        self.max_answer = max_answer

    def query(self, expr: str) -> list[Sample]:
        """The instant vector `expr` evaluates to now."""
        where = f"{self.url}/api/v1/query"
        request = urllib.request.Request(
            where, data=urllib.parse.urlencode({"query": expr}).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"},
        )
        start = time.monotonic()
        late = WaitTimeout(f"Prometheus at {self.url} did not answer within {self.timeout:g}s")
        try:
            with self.opener(request, timeout=self.timeout) as reply:
                body = self._whole(reply, where)
        except urllib.error.HTTPError as e:
            # Prometheus answers a bad query with 400 (or 422) and a JSON error; anything else is not one.
            doc = _json(self._whole(e, where))
            if doc is None or doc.get("status") != "error":
                raise InvalidInput(Param("url", "read_fleet"), f" {self.url} is not a Prometheus server "
                                   f"(HTTP {e.code} from {where})") from None
            return parse_answer(doc, expr)
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            reason = getattr(e, "reason", e)
            # Its sockets shut down at the deadline (urlopen_within): what follows reads as a hang-up.
            if isinstance(reason, (socket.timeout, TimeoutError)) or time.monotonic() - start >= self.timeout:
                raise late from None
            if isinstance(e, http.client.HTTPException) and not isinstance(e, OSError):
                raise InvalidInput(Param("url", "read_fleet"), f" {self.url} is not a Prometheus server "
                                   f"({where} answered no HTTP: {type(e).__name__})") from None
            text = getattr(reason, "strerror", None) or str(reason)
            raise RpctlError(f"cannot reach Prometheus at {self.url}: {text}") from None
        doc = _json(body)
        if doc is None or "status" not in doc:
            if time.monotonic() - start >= self.timeout:
                raise late  # an answer cut short at the deadline
            raise InvalidInput(Param("url", "read_fleet"), f" {self.url} is not a Prometheus server "
                               f"({where} answered no API JSON)")
        return parse_answer(doc, expr)

    def _whole(self, reply, where: str) -> bytes:
        """The answer's body, up to max_answer bytes."""
        body = reply.read(self.max_answer + 1)
        if len(body) > self.max_answer:
            raise InvalidInput(Param("url", "read_fleet"), f" {self.url} is not a Prometheus server "
                               f"({where} answered more than {self.max_answer} bytes)")
        return body


def _json(body: bytes) -> Optional[dict]:
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: arrays nested a hundred thousand deep
        return None
    return doc if isinstance(doc, dict) else None


def parse_answer(doc: dict, expr: str) -> list[Sample]:
    """The samples of an API answer (the JSON document /api/v1/query returned for `expr`); a
    refused query is InvalidInput with Prometheus' reason."""
    if doc.get("status") != "success":
        reason = _said(doc.get("error") or doc.get("errorType") or "no reason given")
        if doc.get("errorType") == "bad_data":
            raise InvalidInput("Prometheus refused the query: ", Param("match", "read_fleet"),
                               f" is not a valid selector ({reason})")
        raise RpctlError(f"Prometheus could not run {expr!r}: {reason}")
    data = doc.get("data") or {}
    kind = data.get("resultType") if isinstance(data, dict) else type(data).__name__
    if kind != "vector":
        raise RpctlError(f"Prometheus answered {expr!r} with a {_said(kind)!r}, not a vector")
    result = data.get("result") or []
    if not isinstance(result, list):
        raise RpctlError(f"Prometheus answered {expr!r} with a vector whose result is {_said(result)}, not a list")
    out = []
    for item in result:
        try:
            labels, value = item["metric"], float(item["value"][1])
        except (KeyError, IndexError, TypeError, ValueError, OverflowError):
            labels = value = None
        if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
            raise RpctlError(f"Prometheus answered {expr!r} with a sample rpctl cannot read: {_said(item)}")
        out.append(Sample(dict(labels), value))
    return out


def _said(what: object) -> str:
    """What a server said, as one line of a message, and a short one."""
    text = " ".join((what if isinstance(what, str) else repr(what)).split())
    return text if len(text) <= 200 else text[:200] + "..."


def _whole(value: float, most: int) -> Optional[int]:
    """A sample's value as a count or a weight: None when it is none (NaN, infinite), else within 0..most."""
    return min(max(int(value), 0), most) if math.isfinite(value) else None


# Queries ---------------------------------------------------------------------------------


def queries(match: str, window: str) -> dict[str, str]:
    """The instant queries of one read, by what they give.  `match` goes inside every selector."""
    sel = f",{match}" if match else ""
    member_totals = "|".join(c.name for c in MEMBER_COUNTERS)
    group_totals = "|".join(c.name for c in GROUP_COUNTERS)
    return {
        "info": f"rpctl_group_info{{{match}}}",
        "state": f"rpctl_member_state{{{match}}} == 1",
        "weight": f"rpctl_member_weight{{{match}}}",
        # Adaptive groups' members only (1 while serve throttles one); the reason stays on the host.
        "throttled": f"rpctl_member_throttled{{{match}}}",
        "member_totals": f'{{__name__=~"rpctl_member_({member_totals})_total"{sel}}}',
        # One rate per counter, added up: rate() drops the metric's name, so one rate() of the
        # four would hold four series of the same labels, which Prometheus refuses.
        "rates": " + ".join(f"sum by (instance, group, member) (rate(rpctl_member_{c.name}_total{{{match}}}"
                            f"[{window}]))" for c in MEMBER_COUNTERS),
        "queue": f'{{__name__=~"rpctl_member_queued_(connections|bytes)"{sel}}}',
        "group_totals": f'{{__name__=~"rpctl_group_({group_totals})_total"{sel}}}',
        "unmanaged": f"rpctl_group_unmanaged_listeners{{{match}}}",
        # Server generations (decision 0021): each member's, and which generation is a canary
        # (a role the members' states do not tell).
        "generation": f"rpctl_member_server_generation{{{match}}}",
        "canary": f'rpctl_generation_state{{state="canary"{sel}}} == 1',
        # Groups seen within LOOKBACK whose exporter cannot be scraped now, or cannot read the
        # pinned state: their series went stale, so without this they would just vanish.
        "unreachable": f"(last_over_time(rpctl_group_info{{{match}}}[{LOOKBACK}]) unless on (instance, group) "
                       f"rpctl_group_info{{{match}}}) and on (instance) (up == 0 or rpctl_up == 0)",
    }


def read_fleet(api: PrometheusApi, match: Optional[str] = None, window: str = DEFAULT_WINDOW) -> list[GroupView]:
    """Every group Prometheus has from rpctl exporters (those `match` selects), sorted by
    instance and name.  NotFound when there is none."""
    inner = parse_match(match)
    answers = {what: api.query(expr) for what, expr in queries(inner, parse_window(window)).items()}
    views = fleet_views(answers)
    if not views:
        selected = f" matching {{{inner}}}" if inner else ""
        raise NotFound(f"Prometheus at {api.url} has no rpctl series{selected} "
                       "(does it scrape the rpctl exporter of each host?)")
    return views


MEMBER_COUNTER_NAMES = frozenset(c.name for c in MEMBER_COUNTERS)
GROUP_COUNTER_NAMES = frozenset(c.name for c in GROUP_COUNTERS)
MAX_COUNT = 2**64 - 1  # a counter of the maps is a u64
MAX_GENERATION = 2**32 - 1  # a server generation's number is a u32
MAX_UNMANAGED = 1 << 16  # listeners a view shows as not managed: a count past it is damaged


def _metric_kind(name: str, prefix: str, suffix: str) -> str:
    return name[len(prefix):len(name) - len(suffix)] if suffix else name[len(prefix):]


def fleet_views(answers: dict[str, list[Sample]]) -> list[GroupView]:
    """The views of the answers to queries() (pure: what a test feeds recorded responses)."""
    groups: dict[tuple[str, str], GroupView] = {}
    for s in answers["info"]:
        instance, name = s.labels.get("instance", ""), s.labels.get("group", "")
        groups[(instance, name)] = _group(instance, name, s.labels)

    for s in answers.get("unreachable", []):
        instance, name = s.labels.get("instance", ""), s.labels.get("group", "")
        if (instance, name) not in groups:
            groups[(instance, name)] = _group(instance, name, s.labels)
            groups[(instance, name)].unreachable = True
    members: dict[tuple[str, str], dict[str, MemberView]] = defaultdict(dict)

    def member(s: Sample) -> Optional[MemberView]:
        key = (s.labels.get("instance", ""), s.labels.get("group", ""))
        if key not in groups or groups[key].unreachable or "member" not in s.labels:
            return None  # a group whose info series is missing (a scrape in between): shown next time
        found = members[key]
        name = s.labels["member"]
        if name not in found:
            found[name] = MemberView(index=0, name=name, pid=0, fd=-1, cookie=0, weight=0, draining=False,
                                     gone=False, selected=0, fallback=0, migrated=0, since_publish=0,
                                     target_share=0.0)
        return found[name]

    for s in answers["state"]:
        m = member(s)
        if m is not None:
            state = s.labels.get("state")
            m.gone = state == GONE
            m.draining = state in (DRAINING, DRAINED)
            if state == DRAINED:
                m.queue = 0
            if state == THROTTLED:
                m.throttled = THROTTLED_REASON
    # An exporter of before this query's time has only the state series: read above.
    for s in answers.get("throttled", ()):
        m = member(s)
        if m is not None:
            m.throttled = THROTTLED_REASON if s.value == 1 else None
    # A value that is no number (NaN, infinite) says nothing; counts and weights are kept to
    # what a group can hold.
    for s in answers["weight"]:
        m = member(s)
        if m is not None and _whole(s.value, MAX_WEIGHT) is not None:
            m.weight = _whole(s.value, MAX_WEIGHT)
    for s in answers["member_totals"]:
        m = member(s)
        kind = _metric_kind(s.labels.get("__name__", ""), "rpctl_member_", "_total")
        if m is not None and kind in MEMBER_COUNTER_NAMES and _whole(s.value, MAX_COUNT) is not None:
            setattr(m, kind, _whole(s.value, MAX_COUNT))
    for s in answers["rates"]:
        m = member(s)
        if m is not None and math.isfinite(s.value) and s.value >= 0:
            m.rate = (m.rate or 0.0) + s.value
    for s in answers["queue"]:
        m = member(s)
        if m is not None and (m.state != DRAINED or s.value == 0) and _whole(s.value, MAX_COUNT) is not None:
            m.queue = _whole(s.value, MAX_COUNT)
    canaries = {(s.labels.get("instance", ""), s.labels.get("group", ""), s.labels.get("generation", ""))
                for s in answers.get("canary", ())}
    for s in answers.get("generation", ()):
        m = member(s)
        if m is not None and _whole(s.value, MAX_GENERATION) is not None:
            m.generation = _whole(s.value, MAX_GENERATION)
            m.canary = (s.labels.get("instance", ""), s.labels.get("group", ""), str(m.generation)) in canaries
    for s in answers["group_totals"]:
        g = groups.get((s.labels.get("instance", ""), s.labels.get("group", "")))
        kind = _metric_kind(s.labels.get("__name__", ""), "rpctl_group_", "_total")
        if g is not None and kind in GROUP_COUNTER_NAMES and _whole(s.value, MAX_COUNT) is not None:
            setattr(g, kind, _whole(s.value, MAX_COUNT))
    for s in answers["unmanaged"]:
        g = groups.get((s.labels.get("instance", ""), s.labels.get("group", "")))
        if g is not None:
            # Prometheus has how many, not whose: listeners without a cookie or a process.
            g.unmanaged = [UnmanagedListener(cookie=0, inode=0, pid=None, comm="")] * (_whole(s.value, MAX_UNMANAGED)
                                                                                      or 0)

    for key, g in groups.items():
        g.members = [found for _, found in sorted(members[key].items())]
        for i, m in enumerate(g.members):
            m.index = i
        set_target_shares(g.members)
        g.generations = generation_views(g.members)
        total = sum(m.rate or 0.0 for m in g.members)
        for m in g.members:
            m.observed_share = (m.rate or 0.0) / total if total > 0 else None
    return [groups[k] for k in sorted(groups)]


def _group(instance: str, name: str, labels: dict[str, str]) -> GroupView:
    proto, _, hostport = labels.get("endpoint", "").partition(":")
    try:
        addr, port = parse_hostport(hostport)
        family = family_of(addr)
    except ValueError:
        addr, port, family = hostport, 0, socket.AF_INET  # an exporter of another version: shown as it says
    try:
        prog_id = int(labels.get("program_id", "0"))
    except ValueError:
        prog_id = 0
    view = GroupView(name=name, proto=labels.get("protocol", proto), family=family, addr=addr, port=port,
                     prog_id=prog_id, gen=0, mode=labels.get("mode", "weighted"), published_ns=0, created_ns=0,
                     migration=labels.get("migration", "true") == "true", instance=instance,
                     adaptive=labels.get("adaptive", "false") == "true", balance=labels.get("balance", HASH))
    return view
