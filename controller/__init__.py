"""rpctl's controller: the library behind the `rpctl` command line.

It never prints or exits: it returns data, raises the errors of
rpctl.controller.contract.errors, and logs to logging.getLogger("rpctl.<module>")
(no handler of its own).

Public modules (import them, or reach them as attributes of this package):

    group     a group and its members: register, weigh, drain, unload (the store's public face)
    options   GroupOptions: what a group is made with (UDP flow affinity, its table, QUIC routing, balance)
    quic      QUIC-LB server ids, and the connection ids a server makes with its id (make_cid)
    views     the read model: GroupView, MemberView, member states, the counters
    drain     wait until a draining member has nothing left to serve
    join      a worker makes its own SO_REUSEPORT socket a member
    launcher  Launcher: start N copies of a command on one port as members, and supervise them
    restart   restart() and rollout(): restart members without losing a connection
    discover  the listeners of a port and the process that serves each one
    adopt     adopt(): register every listener of a port at once
    config    load(): the groups of rpctl.toml (GroupSpec), checked whole
    reconcile reconcile(): make one group what its GroupSpec says, in one publish
    naming    member names from a format, and the stable {i}
    pin       pin connections to the member of their CPU or RSS queue, or stop
    rss       what a network device says about its RSS (queues, hash, interrupts)
    probe     what this kernel and this process can do (the checks of `rpctl doctor`)
    sockets   member sockets (take, inspect, make) and endpoints (EndpointKey, endpoint_text)
    state     where groups live in bpffs (Layout), and their locks
    stale_state  state folders of network namespaces that no longer exist: remove_stale()
    serve     Serve: keep every group of a file true to it while servers come and go
    watch     the cheap look at a group that tells serve when to reconcile
    notify    sd_notify: READY, RELOADING, STOPPING for a service manager
    errors    the exception tree and its exit codes
    refs      references to the library's parameters and operations inside error messages

The other modules (abi, bpffs, bpfsys, compiled, diag, flows, headers,
jiffies, loader, maps, pin_table, process, slot_table, toeplitz, adaptive,
prometheus_source, audit, system_log, and the parts of config, serve and the launcher:
config_spec, config_keys, config_defaults, toml_lines, keepers,
adaptive_loop, run_defaults, supervisor, launched_group) are its insides.

Each module lives in the package of its layer, lowest first: contract,
tables (pure), kernel, store, read, ops.  A module imports from its own
layer and the layers below it, never above (tests/unit/test_import_graph.py
holds the rule).  The names above are where the public modules are
reached: `rpctl.controller.group` is rpctl.controller.store.group, a
facade over the store's modules (generation, lookup, lifecycle,
membership, registration, steering, policy).

Importing this package imports nothing: modules and names load on first
use, so that a command pays only for what it uses (bcc alone costs 40-70 ms
and only loading a program needs it).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Public module -> where it lives (its layer's package).
MODULES = {
    "adopt": "ops.adopt",
    "config": "ops.config",
    "discover": "kernel.discover",
    "drain": "ops.drain",
    "errors": "contract.errors",
    "group": "store.group",
    "join": "store.join",
    "launcher": "ops.launcher",
    "naming": "tables.naming",
    "notify": "ops.notify",
    "options": "store.options",
    "pin": "ops.pin",
    "probe": "kernel.probe",
    "quic": "tables.quic",
    "reconcile": "ops.reconcile",
    "refs": "contract.refs",
    "restart": "ops.restart",
    "rss": "kernel.rss",
    "serve": "ops.serve",
    "sockets": "kernel.sockets",
    "stale_state": "store.stale_state",
    "state": "store.state",
    "views": "read.views",
    "watch": "ops.watch",
}

# The main names, by the module that defines them.
_NAMES = {
    "AdoptResult": "adopt",
    "Config": "config",
    "EndpointKey": "sockets",
    "ExitStatus": "errors",
    "Group": "group",
    "GroupOptions": "options",
    "GroupSpec": "config",
    "GroupView": "views",
    "InvalidInput": "errors",
    "Launcher": "launcher",
    "Layout": "state",
    "MemberView": "views",
    "NotFound": "errors",
    "PermissionDenied": "errors",
    "Plan": "reconcile",
    "Registration": "group",
    "RestartOptions": "restart",
    "Restarted": "restart",
    "RpctlError": "errors",
    "Serve": "serve",
    "StateError": "errors",
    "Unsupported": "errors",
    "UsageError": "errors",
    "WaitTimeout": "errors",
    "read_view": "views",
    "read_views": "views",
    "register": "group",
    "remove_stale": "stale_state",
    "resolve_group": "group",
    "set_draining": "group",
    "set_weights": "group",
    "unload": "group",
    "unregister": "group",
    "wait_drained": "drain",
}

__all__ = [*MODULES, *sorted(_NAMES)]


def __getattr__(name: str) -> Any:
    if name in MODULES:
        return importlib.import_module(f"{__name__}.{MODULES[name]}")
    module = _NAMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{MODULES[module]}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:
    from .contract import errors, refs
    from .contract.errors import (
        ExitStatus,
        InvalidInput,
        NotFound,
        PermissionDenied,
        RpctlError,
        StateError,
        Unsupported,
        UsageError,
        WaitTimeout,
    )
    from .kernel import discover, probe, rss, sockets
    from .kernel.sockets import EndpointKey
    from .ops import adopt, config, drain, launcher, notify, pin, reconcile, restart, serve, watch
    from .ops.adopt import AdoptResult
    from .ops.config import Config, GroupSpec
    from .ops.drain import wait_drained
    from .ops.launcher import Launcher
    from .ops.reconcile import Plan
    from .ops.restart import Restarted, RestartOptions
    from .ops.serve import Serve
    from .read import views
    from .read.views import GroupView, MemberView, read_view, read_views
    from .store import group, join, options, stale_state, state
    from .store.group import Group, Registration, register, resolve_group, set_draining, set_weights, unload, unregister
    from .store.options import GroupOptions
    from .store.stale_state import remove_stale
    from .store.state import Layout
    from .tables import naming, quic
