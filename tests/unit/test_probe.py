"""controller/kernel/probe.py: kernel version checks and capability bits (no privileges)."""

from __future__ import annotations

import platform

import pytest
from hypothesis import given
from rpctl.controller.contract.errors import Unsupported
from rpctl.controller.kernel import probe

from tests.support import hostile


@pytest.mark.parametrize(
    "release, want",
    [("6.18.44-fc-v657", (6, 18)), ("5.15.0-91-generic", (5, 15)), ("4.19.0", (4, 19)), ("6.1.0-56-amd64", (6, 1))],
)
def test_kernel_version_parses_release_strings(release, want):
    assert probe.kernel_version(release) == want


def test_too_old_kernel_is_refused_with_one_line(monkeypatch):
    monkeypatch.setattr(platform, "release", lambda: "5.4.0-150-generic")
    with pytest.raises(Unsupported) as e:
        probe.require_kernel()
    assert "too old" in str(e.value) and "\n" not in str(e.value)
    monkeypatch.setattr(platform, "release", lambda: "5.10.0")
    probe.require_kernel()
    assert not probe.kernel_at_least(probe.MIGRATE_KERNEL)


def test_capability_bits_are_read_from_a_mask():
    caps = (1 << probe.CAP_BPF) | (1 << probe.CAP_NET_ADMIN)
    assert probe.has_cap(probe.CAP_BPF, caps)
    assert not probe.has_cap(probe.CAP_SYS_PTRACE, caps)


STATUS = "Name:\trpctl\nUid:\t0\t0\t0\t0\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\nCapBnd:\t000001ffffffffff\n"


def test_capabilities_are_read_from_status():
    assert probe.caps_of_status(STATUS) == 0x1FFFFFFFFFF
    assert probe.caps_of_status("CapEff:\t-1\n") == 0 and probe.caps_of_status("CapEff:\n") == 0


@given(hostile.proc_text(STATUS))
def test_any_status_gives_a_mask_of_capabilities_none_if_unsure(text):
    caps = probe.caps_of_status(text)
    assert 0 <= caps < 1 << 128
