"""The compiled program kept between loads (controller/kernel/compiled.py) on the
real kernel: compiled once, loaded as the program every group shares
(store/shared_program.py), which steers each group by its own maps."""

from __future__ import annotations

import os

import pytest
from rpctl.controller.kernel import compiled, loader

from tests.support.traffic import tcp_connections

pytestmark = pytest.mark.kernel


@pytest.fixture
def empty_cache(tmp_path, monkeypatch, own_shared_program):
    """No program kept, and a shared program of the test's own: its first group loads it."""
    folder = tmp_path / "programs"
    monkeypatch.setattr(compiled, "CACHE_DIR", str(folder))
    compiled.forget()
    return folder


def test_a_kept_program_steers_each_group_by_its_own_maps(netns, rpctl, make_members, empty_cache, monkeypatch):
    compiles = []
    real_compile = loader.compile_with_bcc
    monkeypatch.setattr(loader, "compile_with_bcc", lambda *a: compiles.append(a) or real_compile(*a))

    first = make_members(port=7001)
    for i in range(2):
        first.add()
    first.register_all(prefix="a")
    # Two programs: the group's (its short cut) and the one every group shares.
    assert len(compiles) == 2
    assert len(list(empty_cache.iterdir())) == 2

    # Another process would find the entry on disk: nothing in memory, and no compiler.
    compiled.forget()
    monkeypatch.setattr(loader, "compile_with_bcc", lambda *a: pytest.fail("compiled again"))
    second = make_members(port=7002)
    for i in range(3):
        second.add()
    second.register_all(prefix="b")
    rpctl.ok("drain", "b0", "--group", "tcp-7002")
    rpctl.ok("weights", "b2=3", "--group", "tcp-7002")

    # Each program reads its own group's tables: were the fds crossed, the
    # second group's drain and weights would show in the first, or nowhere.
    counts, failures = tcp_connections(second, 2000, seed=3)
    assert failures == 0 and counts[0] == 0
    assert 0.70 < counts[2] / (counts[1] + counts[2]) < 0.80, dict(counts)
    counts, failures = tcp_connections(first, 2000, seed=4)
    assert failures == 0 and min(counts[0], counts[1]) > 850, dict(counts)


def test_a_damaged_kept_program_is_compiled_again(netns, rpctl, make_members, empty_cache, monkeypatch,
                                                own_shared_program):
    members = make_members(port=7001)
    members.add()
    members.register_all(prefix="a")
    for entry in empty_cache.iterdir():
        entry.write_bytes(entry.read_bytes()[:-8])
    # The last group gone, the shared program goes: the next group loads it again.
    rpctl.ok("unload", "--group", "tcp-7001")
    assert not os.path.exists(own_shared_program)

    compiled.forget()
    compiles = []
    real_compile = loader.compile_with_bcc
    monkeypatch.setattr(loader, "compile_with_bcc", lambda *a: compiles.append(a) or real_compile(*a))
    other = make_members(port=7002)
    other.add()
    other.register_all(prefix="b")
    assert len(compiles) == 2
    counts, failures = tcp_connections(other, 200, seed=5)
    assert failures == 0 and counts[0] == 200


def test_a_program_the_verifier_refuses_fails_in_one_line_naming_why(tmp_path, empty_cache):
    from rpctl.controller.contract.errors import RpctlError

    source = tmp_path / "bad.bpf.c"
    source.write_text("#include <uapi/linux/bpf.h>\n"
                      "int bad(struct sk_reuseport_md *md) { return *(int *)((char *)md + 4000); }\n")
    with pytest.raises(RpctlError) as e:
        loader.compile_and_load(str(source), "bad", {}, migrate=False)
    message = str(e.value)
    assert "\n" not in message and "invalid bpf_context access" in message, message
    log = message.rsplit("verifier log: ", 1)[1].rstrip(")")
    with open(log) as f:
        assert "invalid bpf_context access" in f.read()
