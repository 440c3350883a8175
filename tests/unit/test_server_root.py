"""controller/kernel/server_root.py: the key of a listener's server generation, read from /proc."""

from __future__ import annotations

import os

from hypothesis import given
from rpctl.controller.kernel.server_root import ProcStat, generation_key, parse_stat

from tests.support import hostile


def test_a_process_whose_parent_holds_no_listener_is_its_own_master():
    key = generation_key(os.getpid(), holders={os.getpid()})
    assert key is not None and key.startswith(f"process {os.getpid()} started ")


def test_a_parent_that_holds_a_listener_is_the_master():
    key = generation_key(os.getpid(), holders={os.getpid(), os.getppid()})
    assert key is not None and key.startswith(f"process {os.getppid()} started ")
    assert generation_key(os.getpid(), holders={os.getppid()}) == key


def test_the_start_time_tells_a_reused_pid_apart():
    with open(f"/proc/{os.getpid()}/stat") as f:
        started = f.read().rsplit(")", 1)[1].split()[19]
    assert generation_key(os.getpid()) == f"process {os.getpid()} started {started}"


def test_a_gone_process_has_no_key_and_cgroups_key_by_path():
    assert generation_key(2**22 + 1) is None
    assert generation_key(os.getpid(), by="cgroup", cgroup="/system.slice/app@blue.service") == \
        "cgroup /system.slice/app@blue.service"
    assert generation_key(os.getpid(), by="cgroup", cgroup=None) is None


STAT = ("28468 (cat) R 28466 28466 19580 0 -1 4194304 97 0 0 0 0 0 0 0 20 0 1 0 1706937 3133440 382 "
        "18446744073709551615 94043713208320 94043713228201 140726459265504 0 0 0 0 0 0 0 0 0 17 0 0 0\n")


def test_stat_is_read_after_the_last_parenthesis():
    assert parse_stat(STAT) == ProcStat(28466, "1706937")
    assert parse_stat(STAT.replace("(cat)", "(a) b (c))")) == ProcStat(28466, "1706937")
    assert parse_stat(STAT[:60]) is None and parse_stat("") is None


@given(hostile.proc_text(STAT, STAT.replace("(cat)", "(x) 1 2 (y)")))
def test_any_stat_text_reads_as_a_parent_and_start_or_as_none(text):
    stat = parse_stat(text)
    assert stat is None or (stat.ppid >= 0 and stat.start.isdigit())


def test_a_process_whose_name_is_not_utf8_has_a_key(own_name):
    """Any process may name itself (prctl PR_SET_NAME) with bytes that are not UTF-8."""
    own_name(b"\xff\xfeworker")
    key = generation_key(os.getpid(), holders={os.getpid()})
    assert key is not None and key.startswith(f"process {os.getpid()} started ")
