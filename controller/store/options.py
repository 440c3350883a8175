"""What a group is made with: its creation options (the UDP flow table, QUIC routing, balance).

A group's options are fixed when its first member creates it and are kept
in its ctl element, where the program reads them.  GroupOptions carries
the options one caller asked for, None for those it left alone, so that
the command line (and a configuration file) can give some and not others:
resolved() fills in the defaults at creation, and check_against() refuses
options that differ from those of an existing group instead of ignoring
them.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Optional

from ..contract import abi
from ..contract.errors import InvalidInput, StateError
from ..contract.refs import Param
from ..kernel import jiffies
from ..tables.quic import DEFAULT_SERVER_ID_LENGTH, check_length

DEFAULT_FLOW_TABLE_SIZE = abi.RP_FLOW_TABLE_DEFAULT
DEFAULT_FLOW_IDLE_TIMEOUT = abi.RP_FLOW_IDLE_MS_DEFAULT / 1000
# Small tables only serve tests.  Sizes are powers of two: the program
# finds a flow's set with a mask.
MIN_FLOW_TABLE_SIZE = 256
MAX_FLOW_TABLE_SIZE = 1 << 22  # 4 M flows, 64 MiB of kernel memory (16 bytes a flow)
# The program keeps the timeout in milliseconds in a u32.
MAX_FLOW_IDLE_TIMEOUT = 86400.0
MIN_FLOW_IDLE_TIMEOUT = 0.1
# What the weighted table is indexed by: the kernel's hash of the 4-tuple (a
# flow's packets stay together), or, in UDP groups, a random draw per
# datagram (RP_CTL_DATAGRAM: one source's datagrams spread by the weights).
HASH, DATAGRAM = "hash", "datagram"
BALANCES = (HASH, DATAGRAM)


@dataclass(frozen=True)
class GroupOptions:
    """Creation options of a group; None: not given (the default, or the group's own)."""

    flow_affinity: Optional[bool] = None       # UDP: remember each flow's member
    flow_table_size: Optional[int] = None      # UDP: entries of the flow table
    flow_idle_timeout: Optional[float] = None  # UDP: seconds after which a silent flow is new
    quic: Optional[bool] = None                # UDP: route QUIC by the server id of connection ids
    quic_server_id_length: Optional[int] = None  # bytes of a QUIC-LB server id
    balance: Optional[str] = None              # HASH or DATAGRAM (UDP, without flows or QUIC)

    def check(self) -> GroupOptions:
        size, idle = self.flow_table_size, self.flow_idle_timeout
        if size is not None and (
            isinstance(size, bool) or not isinstance(size, int) or not MIN_FLOW_TABLE_SIZE <= size <= MAX_FLOW_TABLE_SIZE
            or size & (size - 1)
        ):
            raise InvalidInput(
                f"flow table size {size!r}: use a power of two of flows in "
                f"{MIN_FLOW_TABLE_SIZE}..{MAX_FLOW_TABLE_SIZE} (", Param("flow_table_size"), ")",
            )
        if idle is not None and (
            isinstance(idle, bool) or not isinstance(idle, (int, float))
            or not MIN_FLOW_IDLE_TIMEOUT <= idle <= MAX_FLOW_IDLE_TIMEOUT
        ):
            raise InvalidInput(
                f"flow idle timeout {idle!r}: use seconds in {MIN_FLOW_IDLE_TIMEOUT:g}..{MAX_FLOW_IDLE_TIMEOUT:g} (",
                Param("flow_idle_timeout"), ")",
            )
        length = self.quic_server_id_length
        if length is not None:
            if not self.quic:
                raise InvalidInput("a QUIC server id length goes with QUIC routing (", Param("quic"), ")")
            check_length(length)
        self._check_balance()
        return self

    def _check_balance(self) -> None:
        if self.balance is None or self.balance == HASH:
            return
        if self.balance != DATAGRAM:
            raise InvalidInput(f"balance {self.balance!r}: use {' or '.join(BALANCES)} (", Param("balance"), ")")
        if self.flow_affinity:
            raise InvalidInput("datagram balance places every datagram anew, flow affinity keeps a flow on its "
                               "member: choose one (", Param("balance"), ")")
        if self.flow_table_size is not None or self.flow_idle_timeout is not None:
            raise InvalidInput("datagram balance keeps no flows: a flow table's size and idle timeout do not "
                               "apply (", Param("balance"), ")")
        if self.quic:
            # A client's Initial packets carry no server id yet: spread, its handshake breaks.
            raise InvalidInput("datagram balance would spread a QUIC connection's first packets (before it "
                               "has a server id) over the members: not with QUIC routing (", Param("balance"), ")")

    def given(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def resolved(self, proto: int) -> GroupOptions:
        """Every option set: what a new group of protocol `proto` is made with.
        Flow affinity is on by default for UDP; TCP groups have none (the
        kernel places a connection once)."""
        self.check()
        if proto != abi.RP_PROTO_UDP:
            if self.flow_affinity or self.flow_table_size is not None or self.flow_idle_timeout is not None:
                raise InvalidInput("flow affinity and its table are for UDP groups; this socket is TCP")
            if self.quic or self.quic_server_id_length is not None:
                raise InvalidInput("QUIC routing is for UDP groups; this socket is TCP")
            if self.balance == DATAGRAM:
                raise InvalidInput("datagram balance is for UDP groups; this socket is TCP (the kernel places "
                                   "a connection once)")
            return GroupOptions(False, 0, 0.0, False, 0, HASH)
        balance = self.balance or HASH
        # Datagram balance keeps no flows: flow affinity is off unless asked for (refused above).
        affinity = balance == HASH if self.flow_affinity is None else self.flow_affinity
        routed = bool(self.quic)
        return GroupOptions(
            affinity,
            self.flow_table_size or DEFAULT_FLOW_TABLE_SIZE if affinity else 0,
            (DEFAULT_FLOW_IDLE_TIMEOUT if self.flow_idle_timeout is None else self.flow_idle_timeout)
            if affinity else 0.0,
            routed,
            (self.quic_server_id_length or DEFAULT_SERVER_ID_LENGTH) if routed else 0,
            balance,
        )

    def write_ctl(self, ctl: abi.RpCtl, hz: int) -> None:
        """Store resolved options in a new group's ctl element; `hz` is the
        kernel's tick rate, the unit of the program's flow clock."""
        if self.flow_affinity:
            ctl.flags |= abi.RP_CTL_FLOWS
            ctl.flow_idle_ticks = jiffies.ticks(self.flow_idle_timeout or 0, hz)
        ctl.flow_table_size = self.flow_table_size or 0
        ctl.flow_idle_ms = round((self.flow_idle_timeout or 0) * 1000)
        if self.quic:
            ctl.flags |= abi.RP_CTL_QUIC
        ctl.quic_sid_len = self.quic_server_id_length or 0
        if self.balance == DATAGRAM:
            ctl.flags |= abi.RP_CTL_DATAGRAM

    @classmethod
    def of_ctl(cls, ctl: abi.RpCtl) -> GroupOptions:
        """The options a group was made with."""
        routed = bool(ctl.flags & abi.RP_CTL_QUIC)
        others = (routed, ctl.quic_sid_len if routed else 0, balance_of(ctl))
        if not ctl.flags & abi.RP_CTL_FLOWS:
            return cls(False, 0, 0.0, *others)
        return cls(True, ctl.flow_table_size, ctl.flow_idle_ms / 1000, *others)

    def differences(self, own: GroupOptions) -> list[tuple[str, object, object]]:
        """(option, given value, own value) of each option given that differs from `own` (a group's options)."""
        out = []
        for name, value in self.given().items():
            mine = getattr(own, name)
            if name == "flow_idle_timeout":
                differs = round(float(value) * 1000) != round((mine or 0) * 1000)
            else:
                differs = value != mine
            if differs:
                out.append((name, value, mine))
        return out

    def check_against(self, group: str, own: GroupOptions) -> None:
        """Refuse options that differ from those group `group` was made with."""
        self.check()
        for name, value, _mine in self.differences(own)[:1]:
            raise StateError(
                f"group {group!r} was made with {_describe(own)}; ", Param(name),
                f"={value_text(value)} differs (a group's options are set when it is created: "
                "unload it and register again to change them)",
            )


NONE_GIVEN = GroupOptions()  # every option left to the defaults (at creation) or to the group (after)


def balance_of(ctl: abi.RpCtl) -> str:
    """What a group's weighted table is indexed by: HASH or DATAGRAM."""
    return DATAGRAM if ctl.flags & abi.RP_CTL_DATAGRAM else HASH


def value_text(value: object) -> str:
    """An option's value as messages show it: on/off, 2.5s, 1024."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}s"
    return str(value)


def _describe(opts: GroupOptions) -> str:
    if opts.balance == DATAGRAM:
        return "datagram balance (no flow affinity)"
    if not opts.flow_affinity:
        flows = "no flow affinity"
    else:
        flows = f"flow affinity, a table of {opts.flow_table_size} flows, idle timeout {opts.flow_idle_timeout:g}s"
    if not opts.quic:
        return flows
    return f"{flows}, QUIC routing by {opts.quic_server_id_length}-byte server ids"
