"""controller/kernel/server_root.py: the key of a listener's server generation, read from /proc."""

from __future__ import annotations

import os

from rpctl.controller.kernel.server_root import generation_key


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
