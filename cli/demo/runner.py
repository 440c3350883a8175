"""rpctl demo: demo workers on one port, under load, steered step by step.

Starts N demo workers (real HTTP servers, one process each) on one
SO_REUSEPORT port of 127.0.0.1 through the launcher of `rpctl run` (which
hands each its socket and registers it), and runs the
built-in load generator through four steps: even weights, a drain, new
weights, an undrain.  On a terminal the steps run under the live dashboard
(`rpctl dashboard`, the step on its title line), which closes by itself
when the steps are done (with --keep: on q or Ctrl-C).  Then, and without
a terminal after each step, it prints every worker's share of the replies
the load generator actually got.
"""

from __future__ import annotations

import errno
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable, Mapping

from rich.table import Table
from rpctl.controller.contract.errors import ExitStatus, InvalidInput, NotFound, RpctlError
from rpctl.controller.kernel import probe
from rpctl.controller.kernel.sockets import endpoint_text
from rpctl.controller.ops.launcher import Launcher
from rpctl.controller.ops.run_defaults import RUN_NAMES
from rpctl.controller.read import views
from rpctl.controller.store import group as groups
from rpctl.controller.tables.naming import numbered_names

from ..live import interrupted_by_stop_signals
from ..render import state_text
from ..text import pct
from . import loadgen


@dataclass
class Step:
    title: str
    action: Callable[[str], None]  # called with the group name


def steps(names: list[str]) -> list[Step]:
    drained = names[2] if len(names) > 2 else names[-1]
    return [
        Step("even weights", lambda g: None),
        Step(f"drain {drained}", lambda g: groups.set_draining(drained, True, group=g)),
        Step(
            f"weights {names[0]}=3 {names[1]}=1",
            lambda g: groups.set_weights({names[0]: 3, names[1]: 1}, group=g),
        ),
        Step(f"undrain {drained}", lambda g: groups.set_draining(drained, False, group=g)),
    ]


def shares_table(title: str, view: views.GroupView, counts: Mapping[str, int], count_column: str = "") -> Table:
    """Pure: each worker's state, weight, target share and observed share of `counts`."""
    total = sum(counts.values())
    t = Table(title=title, title_justify="left")
    columns = ["worker", "state", "weight", "target", "observed"] + ([count_column] if count_column else [])
    for col in columns:
        t.add_column(col, justify="left" if col in ("worker", "state") else "right")
    for m in view.members:
        n = counts.get(m.name, 0)
        row = [m.name, state_text(m), str(m.weight), pct(m.target_share), pct(n / total if total else None)]
        t.add_row(*row, *([str(n)] if count_column else []))
    return t


def step_table(title: str, view: views.GroupView, tally: loadgen.Tally, elapsed: float) -> Table:
    """Pure: one step's shares as the load generator saw them."""
    failed = sum(tally.failures.values())
    heading = f"{title}: {tally.total_ok()} connections, {failed} failed, {elapsed:.1f}s"
    return shares_table(heading, view, tally.by_name, "replies")


def _check_port_free(port: int) -> None:
    """Workers with SO_REUSEPORT would silently join someone else's group: refuse a port
    something listens on.  SO_REUSEADDR lets the bind pass over the TIME_WAIT connections a
    demo that just ended leaves on its port (its workers close first), never over a listener.
    A demo group left behind by a killed demo is no listener: the launcher takes it over."""
    s = socket.socket()
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise InvalidInput(f"demo: port {port} on 127.0.0.1 is in use; pick another with --port") from None
        raise
    finally:
        s.close()


def run(env, args) -> ExitStatus:
    if not 2 <= args.workers <= 16:
        raise InvalidInput(f"demo: --workers {args.workers} is out of range 2..16")
    if not 0.5 <= args.step_seconds <= 30:
        raise InvalidInput(f"demo: --step-seconds {args.step_seconds:g} is out of range 0.5..30")
    if not 1 <= args.port <= 65535:
        raise InvalidInput(f"demo: --port {args.port} is out of range 1..65535")
    probe.require_kernel()
    probe.require_bpf_privileges("demo")
    probe.require_ptrace("demo")
    _check_port_free(args.port)

    console = env.console()
    group_name = f"demo-{args.port}"
    names = numbered_names(RUN_NAMES, args.workers)  # as the launcher names its members
    launcher = Launcher(
        group_name,
        args.workers,
        [sys.executable, "-m", "rpctl.cli.demo.worker", "--name", "$RPCTL_MEMBER"],
        listen=f"127.0.0.1:{args.port}",
        # Each worker's "ready" line is for a controller, not for the demo's reader.
        child_stdout=os.devnull,
    )
    launched = _LauncherThread(launcher)
    # The launcher runs on a thread, where it cannot take signals: here SIGTERM and SIGHUP
    # (a closed terminal) end the demo as Ctrl-C does, through the finally of _show.
    with interrupted_by_stop_signals():
        return _show(console, launched, group_name, names, args)


class _LauncherThread:
    """The demo's launcher on a thread of its own, and whether it is done.

    The main thread waits on an Event, never in Thread.join: Python 3.11's join, interrupted
    by KeyboardInterrupt (Ctrl-C, or SIGTERM and SIGHUP here), can mark a thread that still
    runs as stopped, and the demo would then exit before its launcher removed its group."""

    def __init__(self, launcher: Launcher):
        self.launcher = launcher
        self.done = threading.Event()
        self.failure: list[BaseException] = []
        self.thread = threading.Thread(target=self._supervise, name="rpctl-demo-launcher")

    def _supervise(self) -> None:
        try:
            self.launcher.run()
        except BaseException as e:  # reported by the main thread
            self.failure.append(e)
        finally:
            self.done.set()

    def stop(self) -> None:
        """Stop the launcher and wait until it has removed its group; asked again while
        waiting, the launcher kills the workers at once."""
        self.launcher.stop()
        while not self.done.is_set():
            try:
                self.done.wait()
            except KeyboardInterrupt:
                self.launcher.stop()


def _show(console, launched: _LauncherThread, group_name: str, names: list[str], args) -> ExitStatus:
    """Start the launcher's thread and show the demo's steps; the launcher is stopped in the end, whatever happens."""
    try:
        launched.thread.start()
        _wait_for_members(group_name, set(names), launched)
        where = endpoint_text("tcp", socket.AF_INET, "127.0.0.1", args.port)
        console.print(
            f"[bold]rpctl demo[/]: {args.workers} workers on {where}, group {group_name}; "
            f"`rpctl status` in another shell shows it live"
        )
        failed_total = _run_steps(console, group_name, names, args)
        verdict = "no connection failed" if failed_total == 0 else f"{failed_total} connections failed"
        console.print(f"[bold]done[/]: {verdict}")
        if args.keep and not console.is_terminal:
            console.print(f"group {group_name} keeps running until Ctrl-C (--keep): try `rpctl status` elsewhere")
            launched.done.wait()
        return ExitStatus.OK if failed_total == 0 else ExitStatus.ERROR
    finally:
        # The launcher stops the workers, unregisters them and unloads the group.
        launched.stop()


def _wait_for_members(group_name: str, names: set, launched: _LauncherThread, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        if launched.failure:
            raise launched.failure[0]
        if launched.done.is_set():
            raise RpctlError("demo: the launcher stopped before its workers were registered")
        try:
            view = views.read_view(group_name, with_queues=False)
            if {m.name for m in view.members if not m.gone} >= names:
                return
        except NotFound:
            pass
        if time.monotonic() > deadline:
            raise RpctlError(f"demo: workers not registered after {timeout:g}s")
        time.sleep(0.1)


def _run_steps(console, group_name: str, names: list[str], args) -> int:
    """Each step under load; returns the failed connections of all steps.

    The steps run on a thread while the main thread shows the dashboard (on a
    terminal), so that Ctrl-C and q reach the dashboard, which restores the
    terminal; the step tables are printed once the screen is back."""
    from .. import live as live_view
    from ..dashboard_history import History

    stop = threading.Event()
    finished = threading.Event()  # waited on, not joined: see _LauncherThread
    done: list[Table] = []
    failed = [0]
    current = [""]
    errors: list[BaseException] = []
    live = console.is_terminal

    def run_all() -> None:
        try:
            for i, step in enumerate(steps(names), 1):
                if stop.is_set():
                    return
                step.action(group_name)
                current[0] = f"demo step {i}/4: {step.title}"
                tally = loadgen.run_tcp("127.0.0.1", args.port, duration=args.step_seconds, concurrency=4, stop=stop)
                view = views.read_view(group_name)
                failed[0] += sum(tally.failures.values())
                done.append(step_table(step.title, view, tally, tally.elapsed))
                if not live:
                    console.print(done[-1])
            current[0] = "demo steps done" + ("; the group keeps running (--keep)" if args.keep else "")
        except BaseException as e:  # re-raised on the main thread
            errors.append(e)
        finally:
            finished.set()

    threading.Thread(target=run_all, name="rpctl-demo-steps", daemon=True).start()
    try:
        if live:
            live_view.show_live(console, History(), live_view.local_read(group_name), live_view.DEFAULT_INTERVAL, None,
                                until=lambda: finished.is_set() and not args.keep, caption=lambda: current[0])
        else:
            finished.wait()
    finally:
        # Leaving the dashboard early (q, Ctrl-C) ends the steps too.
        stop.set()
        finished.wait()
    if errors:
        raise errors[0]
    if live:
        for table in done:
            console.print(table)
    return failed[0]
