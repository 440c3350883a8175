"""Member names from a format, and a member's name in its command.  Pure.

adopt and apply name members from {comm}, {pid}, {fd} and a stable {i};
`rpctl run` numbers its members with {i} alone (numbered_names), and puts
each one's name where its command says $RPCTL_MEMBER (expand_name).

{i} is the lowest number, from 1, that gives a name no current member has
when a listener first joins; the member keeps that name for the life of its
socket (members are known by socket cookie, so a reload that keeps the
socket keeps the name).  nginx reloaded from 3 workers to 4 keeps nginx-1..3
and its new listener becomes nginx-4; reloaded down to 2 and up to 3 again,
the new listener takes the freed nginx-3.  adopt and apply name newcomers
through assign_names(), the one implementation of the rule.
"""

from __future__ import annotations

import re
import string
from typing import Collection, Iterable, NamedTuple

from ..contract import abi
from ..contract.errors import InvalidInput

__all__ = [
    "DEFAULT_FORMAT",
    "NAME_FIELDS",
    "Newcomer",
    "assign_names",
    "check_format",
    "check_member_name",
    "expand_name",
    "format_name",
    "numbered_names",
]

NAME_FIELDS = ("comm", "pid", "fd", "i")
DEFAULT_FORMAT = "{comm}-{i}"

# The only $VARs expanded in a command, as systemd expands them in ExecStart=:
# their value is the member's name, so no shell is needed to pass a worker
# its own name.
_MEMBER_VARS = ("RPCTL_MEMBER", "LISTEN_FDNAMES")
_VAR_RE = re.compile(r"\$(?:\{(%s)\}|(%s)(?![A-Za-z0-9_]))" % ("|".join(_MEMBER_VARS), "|".join(_MEMBER_VARS)))


def check_format(name_format: str, allowed: Collection[str] = NAME_FIELDS) -> list[str]:
    """The fields name_format uses; InvalidInput when it does not parse or uses one not `allowed`."""
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(name_format) if f is not None]
    except ValueError as e:
        raise InvalidInput(f"name format {name_format!r}: {e}") from None
    bad = [f for f in fields if f not in allowed]
    if bad:
        use = ", ".join(f"{{{f}}}" for f in allowed)
        raise InvalidInput(f"name format {name_format!r}: unknown field {{{bad[0]}}} (use {use})")
    return fields


def check_member_name(name: str) -> str:
    raw = name.encode()
    if not name or len(raw) >= abi.RP_NAME_LEN or not name.isprintable() or "=" in name or name.strip() != name:
        raise InvalidInput(
            f"member name {name!r}: use 1-{abi.RP_NAME_LEN - 1} printable bytes, no '=' and no surrounding spaces"
        )
    return name


def format_name(name_format: str, comm: str, pid: int, fd: int, i: int) -> str:
    """A member name from name_format; {comm} is the process name with characters
    other than letters, digits, '.', '_' and '-' replaced by '_'; {i} counts from 1."""
    check_format(name_format)
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", comm) or "_"
    try:
        name = name_format.format(comm=safe, pid=pid, fd=fd, i=i)
    except (ValueError, TypeError) as e:
        raise InvalidInput(f"name format {name_format!r}: {e}") from None
    return check_member_name(name)


class Newcomer(NamedTuple):
    """A listener about to join, as its name format sees it."""

    comm: str
    pid: int
    fd: int


def assign_names(name_format: str, newcomers: Iterable[Newcomer], taken: Collection[str]) -> list[str]:
    """The names of `newcomers`, in order: each gets the lowest {i} (from 1)
    whose name is neither `taken` (the group's current member names) nor given
    to an earlier newcomer.  A format without {i} gives one name per
    (comm, pid, fd): the caller refuses names that collide."""
    uses_i = "i" in check_format(name_format)
    used = set(taken)
    names = []
    for n in newcomers:
        i = 1
        name = format_name(name_format, n.comm, n.pid, n.fd, i)
        while uses_i and name in used:
            i += 1
            name = format_name(name_format, n.comm, n.pid, n.fd, i)
        used.add(name)
        names.append(name)
    return names


def numbered_names(name_format: str, count: int, *what: object) -> list[str]:
    """The names of members 1..count: `name_format` with {i} the number, its
    only field; refused (InvalidInput) when a name is not a member name or
    two are the same.  `what` (message parts, "name format" when none) says
    whose format it is."""
    what = what or ("name format",)
    names = []
    for i in range(1, count + 1):
        try:
            name = name_format.format(i=i)
        except (KeyError, IndexError, ValueError) as e:
            raise InvalidInput(*what, f" {name_format!r}: only {{i}} may be used ({e})") from None
        names.append(check_member_name(name))
    if len(set(names)) != len(names):
        raise InvalidInput(*what, f" {name_format!r} gives every member the same name: put {{i}} in it")
    return names


def expand_name(arg: str, name: str) -> str:
    """Replace $RPCTL_MEMBER, ${RPCTL_MEMBER}, $LISTEN_FDNAMES and
    ${LISTEN_FDNAMES} in one argument of a command by the member's name."""
    return _VAR_RE.sub(lambda m: name, arg)
