"""controller/store/state.py against a folder of tmp_path, not bpffs: the layout's paths, group
names, the namespace folder's name, the locks, and the temporary names that make creation and
removal all-or-nothing.  No privileges: the locks are flocks on plain folders."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from rpctl.controller.contract.errors import InvalidInput, NotFound, PermissionDenied
from rpctl.controller.kernel import bpffs
from rpctl.controller.store import state
from rpctl.controller.store.state import GROUP_NAME_RE, Layout, check_group_name, in_netns, netns_id

NETNS = "netns7"


@pytest.fixture
def layout(tmp_path) -> Layout:
    return Layout(root=str(tmp_path), netns=NETNS)


def made_group(layout: Layout, name: str) -> str:
    layout.ensure_ns_dir()
    path = layout.group_dir(name)
    os.mkdir(path)
    return path


# Paths -------------------------------------------------------------------------------------------


def test_paths_of_a_given_root_and_namespace(tmp_path, layout):
    assert layout.bpffs == str(tmp_path)
    assert layout.netns == NETNS
    assert layout.ns_dir == os.path.join(str(tmp_path), "rpctl", NETNS)
    assert layout.group_dir("web") == os.path.join(str(tmp_path), "rpctl", NETNS, "web")
    assert layout.temp_dir("web") == os.path.join(layout.ns_dir, f"_tmp-web-{os.getpid()}")


def test_without_a_root_the_bpffs_mount_is_asked_and_without_a_netns_this_one_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(bpffs, "bpffs_root", lambda: str(tmp_path / "bpf"))
    layout = Layout()
    assert layout.bpffs == str(tmp_path / "bpf")
    assert layout.netns == netns_id()
    assert layout.ns_dir == os.path.join(str(tmp_path / "bpf"), "rpctl", netns_id())


def test_a_group_path_checks_the_name(layout):
    with pytest.raises(InvalidInput, match=r"group name 'a\.b'"):
        layout.group_dir("a.b")
    with pytest.raises(InvalidInput, match="group name '../web'"):
        layout.group_dir("../web")


# Group names -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["web", "w", "9", "tcp-8080", "A_b-C", "x" * 63])
def test_good_group_names_are_returned(name):
    assert check_group_name(name) == name


@pytest.mark.parametrize("name", ["", "-web", "_web", "a.b", "a b", "a/b", "x" * 64, "caf\u00e9", "\nweb"])
def test_bad_group_names_are_refused_with_the_rule(name):
    with pytest.raises(InvalidInput, match="use 1-63 letters, digits, '_' or '-', starting with a letter or digit"):
        check_group_name(name)


def test_a_group_name_ending_in_a_newline_is_refused():
    with pytest.raises(InvalidInput):
        check_group_name("web\n")


# The namespace folder's name ---------------------------------------------------------------------


def test_the_namespace_is_named_by_its_cookie_and_the_name_is_stable():
    name = netns_id()
    assert re.fullmatch(r"netns\d+|net\d+", name), name
    assert netns_id() == name
    if name.startswith("netns"):  # Linux 5.14+: the cookie of any socket of this namespace
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            cookie = int.from_bytes(s.getsockopt(socket.SOL_SOCKET, state.SO_NETNS_COOKIE, 8), "little")
        assert name == f"netns{cookie}"
    else:
        assert name == f"net{os.stat('/proc/self/ns/net').st_ino}"


def test_in_netns_refuses_what_is_not_a_namespace():
    r, w = os.pipe()
    try:
        with pytest.raises(OSError, match="setns"):
            in_netns(r, lambda: "entered")
    finally:
        os.close(r)
        os.close(w)


def test_in_netns_runs_the_function_inside_or_says_why_not():
    fd = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if os.geteuid() == 0:
            assert in_netns(fd, netns_id) == netns_id()
            with pytest.raises(ZeroDivisionError):
                in_netns(fd, lambda: 1 // 0)
        else:  # entering a network namespace needs CAP_SYS_ADMIN
            with pytest.raises(PermissionError):
                in_netns(fd, netns_id)
    finally:
        os.close(fd)


# The namespace folder ----------------------------------------------------------------------------


def test_groups_of_a_namespace_never_seen_are_none(layout):
    assert layout.groups() == []
    assert not os.path.exists(layout.ns_dir)


def test_the_namespace_folder_is_made_once_for_its_owner_only(layout):
    old = os.umask(0o022)
    try:
        layout.ensure_ns_dir()
        layout.ensure_ns_dir()
    finally:
        os.umask(old)
    # rpctl's folder and the namespace's: 0700 whatever the umask.
    for folder in (os.path.dirname(layout.ns_dir), layout.ns_dir):
        assert os.stat(folder).st_mode & 0o777 == 0o700, folder


def test_a_namespace_folder_that_cannot_be_made_is_permission_denied(layout, monkeypatch):
    real = os.mkdir

    def refuse(path, mode=0o777):
        if path == layout.ns_dir:
            raise PermissionError(13, "Permission denied", path)
        real(path, mode)

    monkeypatch.setattr(os, "mkdir", refuse)
    with pytest.raises(PermissionDenied, match=re.escape(f"create {layout.ns_dir}: permission denied (run as root)")):
        layout.ensure_ns_dir()


def test_groups_are_listed_by_name_without_temporary_folders(layout):
    for name in ("web", "api", "dns-53"):
        made_group(layout, name)
    os.mkdir(os.path.join(layout.ns_dir, "_tmp-new-123"))
    os.mkdir(os.path.join(layout.ns_dir, "_del-old-123"))
    assert layout.groups() == ["api", "dns-53", "web"]


# All-or-nothing creation and removal ------------------------------------------------------------


def test_a_group_filled_under_its_temporary_name_appears_whole_when_renamed(layout):
    layout.ensure_ns_dir()
    temp = layout.temp_dir("web")
    os.mkdir(temp)
    for pin in ("ctl", "socks", "gens"):
        open(os.path.join(temp, pin), "w").close()
    # While it is filled, nobody sees the group, nor can lock it as a writer.
    assert layout.groups() == []
    with pytest.raises(NotFound, match="no group 'web' in this network namespace"), layout.group_lock("web"):
        pass
    os.rename(temp, layout.group_dir("web"))
    assert layout.groups() == ["web"]
    assert sorted(os.listdir(layout.group_dir("web"))) == ["ctl", "gens", "socks"]


def test_a_removed_group_leaves_nothing(layout):
    path = made_group(layout, "web")
    open(os.path.join(path, "ctl"), "w").close()
    made_group(layout, "api")
    layout.remove_group_dir("web")
    assert layout.groups() == ["api"]
    assert os.listdir(layout.ns_dir) == ["api"]


def test_sweep_removes_what_dead_writers_left_and_nothing_else(layout):
    made_group(layout, "web")
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    dead, alive = child.pid, os.getpid()
    for name in (f"_tmp-new-{dead}", f"_del-old-{dead}", f"_tmp-mine-{alive}", f"_tmp-odd-{dead}x"):
        os.mkdir(os.path.join(layout.ns_dir, name))
    layout.sweep_temp_dirs()
    assert sorted(os.listdir(layout.ns_dir)) == [f"_tmp-mine-{alive}", f"_tmp-odd-{dead}x", "web"]


def test_sweep_of_a_namespace_never_seen_does_nothing(layout):
    layout.sweep_temp_dirs()
    assert not os.path.exists(layout.ns_dir)


# Locks -------------------------------------------------------------------------------------------


def writer(lock) -> tuple[threading.Event, threading.Event]:
    """A thread that takes `lock` (a context manager), says so, and holds it until told:
    (entered, release)."""
    entered, release = threading.Event(), threading.Event()

    def hold() -> None:
        with lock:
            entered.set()
            release.wait(30)

    threading.Thread(target=hold, daemon=True).start()
    return entered, release


def test_a_second_writer_of_a_group_waits_for_the_first(layout):
    made_group(layout, "web")
    first, release_first = writer(layout.group_lock("web"))
    assert first.wait(10)
    second, release_second = writer(layout.group_lock("web"))
    try:
        assert not second.wait(0.3), "two writers held one group's lock"
        release_first.set()
        assert second.wait(10), "the second writer never got the lock"
    finally:
        release_first.set()
        release_second.set()


def test_writers_of_different_groups_do_not_wait_for_each_other(layout):
    made_group(layout, "web")
    made_group(layout, "api")
    web, release_web = writer(layout.group_lock("web"))
    api, release_api = writer(layout.group_lock("api"))
    try:
        assert web.wait(10) and api.wait(10)
    finally:
        release_web.set()
        release_api.set()


def test_creating_and_removing_groups_take_turns_on_the_namespace_lock(layout):
    first, release_first = writer(layout.ns_lock())
    assert first.wait(10)
    assert os.path.isdir(layout.ns_dir)  # the lock made the folder it locks
    second, release_second = writer(layout.ns_lock())
    try:
        assert not second.wait(0.3), "two writers held the namespace lock"
        release_first.set()
        assert second.wait(10)
    finally:
        release_first.set()
        release_second.set()


def test_a_lock_is_released_when_its_block_raises(layout):
    made_group(layout, "web")
    with pytest.raises(RuntimeError), layout.group_lock("web"):
        raise RuntimeError("the write failed")
    entered, release = writer(layout.group_lock("web"))
    release.set()
    assert entered.wait(10)


def test_a_lock_dies_with_its_process(layout):
    made_group(layout, "web")
    code = (
        "import time\n"
        "from rpctl.controller.store.state import Layout\n"
        f"with Layout(root={layout.bpffs!r}, netns={NETNS!r}).group_lock('web'):\n"
        "    print('locked', flush=True)\n"
        "    time.sleep(60)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        waiting, release = writer(layout.group_lock("web"))
        assert not waiting.wait(0.3), "the group was not locked by the other process"
        os.kill(holder.pid, signal.SIGKILL)  # no unlock, no clean-up: the kernel drops the flock
        assert waiting.wait(10), "a killed writer left the group locked"
        release.set()
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


def test_the_lock_of_a_group_that_does_not_exist_is_not_found(layout):
    layout.ensure_ns_dir()
    with pytest.raises(NotFound, match="no group 'web' in this network namespace"), layout.group_lock("web"):
        pass


# Hostile folders: what another rpctl (or anyone with root) left in a namespace's folder ------------

folder_names = st.from_regex(r"_(tmp|del)-[a-z-]{1,8}-[0-9]{1,24}", fullmatch=True) | st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="/\0"), min_size=1, max_size=20).filter(
    lambda n: n not in (".", ".."))


@given(st.lists(folder_names, max_size=5, unique=True))
@example(["_tmp-web-99999999999999999999", "_del-web-0"])  # past any pid, and pid 0: never a live writer
def test_a_namespace_folder_of_any_names_is_listed_and_swept(tmp_path_factory, names):
    layout = Layout(root=str(tmp_path_factory.mktemp("bpffs")), netns=NETNS)
    layout.ensure_ns_dir()
    for name in names:
        os.mkdir(os.path.join(layout.ns_dir, name))
    assert all(GROUP_NAME_RE.fullmatch(g) for g in layout.groups())
    layout.sweep_temp_dirs()
    left = set(os.listdir(layout.ns_dir))
    for name in names:
        temp = re.fullmatch(r"_(tmp|del)-.+-(\d+)", name)
        writer = int(temp.group(2)) if temp else 0
        assert (name in left) == (temp is None or 0 < writer <= 1 << 22 and os.path.exists(f"/proc/{writer}")), name
