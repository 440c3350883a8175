"""`rpctl demo` in-process: options out of range are refused before anything starts.

(The demo itself runs on the real kernel in tests/kernel/test_run_the_demo.py.)
"""

from __future__ import annotations

import pytest
from rpctl.controller.contract.errors import ExitStatus

from tests.support.cli import assert_one_error_line, invoke

pytestmark = pytest.mark.usefixtures("cli_without_system")


@pytest.mark.parametrize("argv, says", [
    (["--workers", "1"], "--workers 1 is out of range 2..16"),
    (["--workers", "17"], "out of range 2..16"),
    (["--step-seconds", "0.1"], "--step-seconds 0.1 is out of range 0.5..30"),
    (["--port", "0"], "--port 0 is out of range 1..65535"),
])
def test_out_of_range_options_exit_4_before_any_check_of_the_system(argv, says):
    # refuse_system would turn any kernel, privilege or bpffs check into another error.
    status, out, err = invoke(["demo", *argv])
    assert status == ExitStatus.INVALID and out == ""
    assert says in assert_one_error_line(err)


def test_defaults():
    from rpctl.cli.main import build_parser

    args = build_parser().parse_args(["demo"])
    assert (args.port, args.workers, args.step_seconds, args.keep) == (18080, 4, 3.0, False)
    assert args.log_prefix == "rpctl run"
