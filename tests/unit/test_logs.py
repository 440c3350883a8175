"""cli/logs.py: the library logs and never prints or exits; the command line shows its log on stderr."""

from __future__ import annotations

import io
import logging

from rpctl.cli.common import Environment
from rpctl.cli.logs import library_log
from rpctl.controller.contract.errors import StateError
from rpctl.controller.contract.refs import Call, Param


def _env() -> Environment:
    return Environment(stdout=io.StringIO(), stderr=io.StringIO())


def test_library_records_become_prefixed_lines_while_inside():
    env = _env()
    launcher = logging.getLogger("rpctl.launcher")
    with library_log(env, "rpctl run"):
        launcher.info("started %s (pid %d)", "worker-1", 42)
        launcher.debug("not shown")
        logging.getLogger("rpctl.group").warning("failpoint %s reached", "before-flip")
        logging.getLogger("elsewhere").warning("not rpctl's")
    launcher.info("after: not shown")
    assert env.stderr.getvalue().splitlines() == [
        "rpctl run: started worker-1 (pid 42)",
        "rpctl run: failpoint before-flip reached",
    ]
    assert env.stdout.getvalue() == ""
    assert logging.getLogger("rpctl").handlers == []


def test_an_rpctl_error_in_a_record_is_worded_as_the_command_line_words_errors():
    env = _env()
    e = StateError("options differ (", Call("unload", group="dns"), " first, or ", Param("flow_table_size"), ")")
    with library_log(env, "rpctl serve"):
        logging.getLogger("rpctl.serve").warning("group %s: cannot reconcile (%s): %s", "dns", "file", e)
    assert env.stderr.getvalue().splitlines() == [
        "rpctl serve: group dns: cannot reconcile (file): options differ "
        "(`rpctl unload --group dns` first, or --flow-table-size)"
    ]


def test_a_stderr_that_went_away_does_not_stop_the_logger():
    class Gone(io.StringIO):
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

    env = Environment(stdout=io.StringIO(), stderr=Gone())
    with library_log(env):
        logging.getLogger("rpctl.launcher").info("unloaded group web")  # no exception
