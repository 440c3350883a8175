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
    """Workers with SO_REUSEPORT would silently join someone else's group."""
    s = socket.socket()
    try:
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
    failure: list[BaseException] = []

    def supervise() -> None:
        try:
            launcher.run()
        except BaseException as e:  # reported by the main thread
            failure.append(e)

    thread = threading.Thread(target=supervise, name="rpctl-demo-launcher")
    thread.start()
    try:
        _wait_for_members(group_name, set(names), thread, failure)
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
            while thread.is_alive():
                thread.join(0.5)
        return ExitStatus.OK if failed_total == 0 else ExitStatus.ERROR
    finally:
        # The launcher stops the workers, unregisters them and unloads the group.
        launcher.stop()
        thread.join()


def _wait_for_members(group_name: str, names: set, thread: threading.Thread, failure: list, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        if failure:
            raise failure[0]
        if not thread.is_alive():
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

    worker = threading.Thread(target=run_all, name="rpctl-demo-steps", daemon=True)
    worker.start()
    try:
        if live:
            live_view.show_live(console, History(), live_view.local_read(group_name), live_view.DEFAULT_INTERVAL, None,
                                until=lambda: not worker.is_alive() and not args.keep, caption=lambda: current[0])
        else:
            worker.join()
    finally:
        # Leaving the dashboard early (q, Ctrl-C) ends the steps too.
        stop.set()
        worker.join()
    if errors:
        raise errors[0]
    if live:
        for table in done:
            console.print(table)
    return failed[0]
