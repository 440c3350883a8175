"""Kernel tests: the real program on the real kernel, each test in a fresh
network namespace.

The test process itself enters the namespace (setns) for the duration of a
test, so the sockets it makes, the threads it starts and the processes it
spawns (workers, rpctl) all live there.  Missing privileges, bpffs, kernel
headers or bcc fail the session with a message: never a silent skip.
"""

from __future__ import annotations

import ctypes
import io
import itertools
import os
import shutil
import subprocess
import sys

import pytest

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
_counter = itertools.count()


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@pytest.fixture(scope="session", autouse=True)
def kernel_prerequisites():
    """Fail loudly, once, when this machine cannot run kernel tests."""
    from rpctl.controller import probe
    from rpctl.controller.errors import RpctlError

    problems = []
    if os.geteuid() != 0:
        problems.append("kernel tests need root (run ./scripts/test.sh as root)")
    else:
        for check in probe.run_checks():
            if not check.ok and not check.warning:
                problems.append(f"{check.name}: {check.detail} (fix: {check.fix})")
    if shutil.which("ip") is None:
        problems.append("iproute2's `ip` is missing (apt-get install iproute2)")
    if problems:
        pytest.fail("cannot run kernel tests: " + "; ".join(problems), pytrace=False)
    try:
        from rpctl.controller.state import bpffs_root

        bpffs_root()
    except RpctlError as e:
        pytest.fail(f"cannot run kernel tests: {e}", pytrace=False)


class Netns:
    def __init__(self, name: str):
        self.name = name


@pytest.fixture
def netns():
    """A fresh network namespace with loopback up, entered for the test."""
    name = f"rpctl-t{os.getpid()}-{next(_counter)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{name}", os.O_RDONLY)
    ns_dir = None
    try:
        _setns(target)
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        from rpctl.controller.state import Layout

        ns_dir = Layout().ns_dir
        yield Netns(name)
    finally:
        # Pinned state is keyed by the namespace's inode, which a later
        # namespace may reuse: never leave it behind.
        if ns_dir:
            _unload_all()
            shutil.rmtree(ns_dir, ignore_errors=True)
        _setns(home)
        os.close(home)
        os.close(target)
        subprocess.run(["ip", "netns", "del", name], check=False)


def _unload_all() -> None:
    from rpctl.controller import group
    from rpctl.controller.errors import RpctlError
    from rpctl.controller.state import Layout

    for name in Layout().groups():
        try:
            group.unload(group=name, force=True)
        except RpctlError:
            pass


class Cli:
    """rpctl in-process: exit code, stdout and stderr of one command."""

    def __call__(self, *argv: str):
        from rpctl.cli.main import Environment, run

        env = Environment(stdout=io.StringIO(), stderr=io.StringIO())
        code = run([str(a) for a in argv], env)
        return code, env.stdout.getvalue(), env.stderr.getvalue()

    def ok(self, *argv: str) -> str:
        code, out, err = self(*argv)
        assert code == 0, f"rpctl {' '.join(map(str, argv))} exited {code}: {err}"
        return out

    def subprocess(self, *argv: str, env=None, **kw) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "rpctl.cli.main", *map(str, argv)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            **kw,
        )


@pytest.fixture
def rpctl():
    return Cli()


@pytest.fixture
def make_members():
    """Members(...) factory whose sockets are closed after the test."""
    from traffic import Members

    made = []

    def make(**kw):
        m = Members(**kw)
        made.append(m)
        return m

    yield make
    for m in made:
        m.close()
