"""The benchmarks' shared pieces (bench/common.py): wrk's summary, the spread of
rounds, the kernel's network counters, windows switched under running load."""

from __future__ import annotations

import os

import pytest

from bench.common import (
    RATIO_HEADER,
    Spread,
    cpu,
    describe,
    net_counters,
    paired_ratios,
    parse_wrk,
    ratio_cells,
    spread,
    switched_windows,
    timed_note,
)

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


def test_parse_wrk_minutes_of_a_long_run():
    r = parse_wrk("  1684921 requests in 1.40m, 237.82MB read\nRequests/sec:  20078.96\n")
    assert r["seconds"] == pytest.approx(84.0)
    assert r["rate"] == pytest.approx(1684921 / 84.0)


def test_spread_of_rounds():
    s = spread([1.0, 0.9, 1.2, 1.1, 0.8])
    assert (s.median, s.low, s.high, s.rounds) == (1.0, 0.8, 1.2, 5)
    assert (s.q1, s.q3) == pytest.approx((0.9, 1.1))
    assert describe(s) == "median 1.000, middle half 0.900-1.100, all 5 rounds 0.800-1.200"


def test_spread_of_one_round_is_that_round():
    assert spread([0.97]) == Spread(0.97, 0.97, 0.97, 0.97, 0.97, 1)
    with pytest.raises(ValueError, match="no rounds"):
        spread([])


def test_paired_ratios_compare_within_each_round():
    results = {"a": [{"rate": 10.0}, {"rate": 30.0}], "b": [{"rate": 9.0}, {"rate": 33.0}]}
    assert paired_ratios(results, "b", "a") == pytest.approx([0.9, 1.1])


SNMP = """\
Ip: Forwarding DefaultTTL
Ip: 1 64
Tcp: RtoAlgorithm MaxConn PassiveOpens OutRsts
Tcp: 1 -1 1234 5
Udp: InDatagrams InErrors RcvbufErrors InCsumErrors
Udp: 100 7 6 1
"""
NETSTAT = """\
TcpExt: SyncookiesSent ListenOverflows ListenDrops
TcpExt: 0 2 3
"""


def test_net_counters_by_group_and_name():
    c = net_counters({"snmp": SNMP, "netstat": NETSTAT})
    assert c["Tcp.PassiveOpens"] == 1234
    assert c["Tcp.MaxConn"] == -1
    assert c["Udp.InErrors"] - c["Udp.InCsumErrors"] == 6
    assert c["TcpExt.ListenDrops"] == 3
    assert "PassiveOpens" not in c


def test_net_counters_of_this_namespace():
    c = net_counters()
    assert {"Tcp.PassiveOpens", "Udp.InErrors", "TcpExt.ListenDrops"} <= set(c)


def test_switched_windows_count_each_selection_in_rotating_order():
    """A counter that grows by 100 a read while "fast" is on and by 10 otherwise:
    each window is what grew between its two reads."""
    events, current, total, extra = [], ["?"], [0], [0]

    def use(name):
        events.append(name)
        current[0] = name

    def read():
        total[0] += 100 if current[0] == "fast" else 10
        return {"n": total[0]}

    def also():
        extra[0] += 1
        return {"placed": extra[0]}

    results = switched_windows(3, ["slow", "fast"], use, read, seconds=0.001, settle=0.0, also=also)
    assert events == ["slow", "fast", "fast", "slow", "slow", "fast"]
    assert [r["n"] for r in results["fast"]] == [100] * 3
    assert [r["n"] for r in results["slow"]] == [10] * 3
    assert all(r["placed"] == 1 for rs in results.values() for r in rs)
    r = results["fast"][0]
    assert r["n/s"] == pytest.approx(100 / r["seconds"])
    assert "placed/s" not in r


def test_timed_note_only_when_a_window_was_timed():
    assert timed_note({"a": [{"timed": 0}], "b": [{"timed": 0}]}) == ""
    assert "In 2 windows" in timed_note({"a": [{"timed": 1}, {"timed": 0}], "b": [{"timed": 3}]})


def test_cpu_counts_round_the_cpus_this_process_may_use():
    allowed = sorted(os.sched_getaffinity(0))
    assert [cpu(k) for k in range(len(allowed) + 1)] == allowed + allowed[:1]


def test_ratio_cells_of_a_selection_and_of_the_reference():
    assert ratio_cells(spread([0.99, 0.97, 1.01])) == ["0.990", "0.980-1.000", "0.970-1.010"]
    assert ratio_cells(None) == ["1", "", ""]
    assert len(ratio_cells(None)) == len(RATIO_HEADER)
