"""The benchmarks' reading of wrk's summary (bench/common.py)."""

from __future__ import annotations

import pytest

from bench.common import parse_wrk

WITH_ERRORS = """\
Running 6s test @ http://127.0.0.1:7400/
  2 threads and 256 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     5.38ms    3.41ms  27.29ms   66.98%
    Req/Sec    11.68k     1.97k   17.28k    82.28%
  94127 requests in 6.08s, 5.39MB read
  Socket errors: connect 1, read 154, write 188, timeout 2
  Non-2xx or 3xx responses: 3
Requests/sec:  15481.41
Transfer/sec:      1.32MB
"""


def test_parse_wrk_counts_every_kind_of_failure():
    r = parse_wrk(WITH_ERRORS)
    assert r["requests"] == 94127
    assert r["seconds"] == pytest.approx(6.08)
    assert r["rate"] == pytest.approx(94127 / 6.08)
    assert r["errors"] == {"connect": 1, "read": 154, "write": 188, "timeout": 2}
    assert r["non2xx"] == 3
    assert r["failed"] == 1 + 154 + 188 + 2 + 3


def test_parse_wrk_clean_run_and_milliseconds():
    clean = "  5000 requests in 900.50ms, 1.00MB read\nRequests/sec: 5552.47\n"
    r = parse_wrk(clean)
    assert (r["requests"], r["failed"], r["non2xx"]) == (5000, 0, 0)
    assert r["seconds"] == pytest.approx(0.9005)


def test_parse_wrk_refuses_what_is_not_a_summary():
    with pytest.raises(ValueError, match="no request count"):
        parse_wrk("unable to connect to 127.0.0.1:7400 Connection refused\n")
