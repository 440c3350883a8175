"""Kernel tests: the real program on the real kernel, each test in a fresh
network namespace.

The test process itself enters the namespace (setns) for the duration of a
test, so the sockets it makes, the threads it starts and the processes it
spawns (workers, rpctl) all live there.  Missing privileges, bpffs, kernel
headers or bcc fail the session with a message: never a silent skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.support.netns import fresh_netns


@pytest.fixture(scope="session", autouse=True)
def kernel_prerequisites():
    """Fail loudly, once, when this machine cannot run kernel tests."""
    from rpctl.controller.contract.errors import RpctlError
    from rpctl.controller.kernel import probe

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
        from rpctl.controller.kernel.bpffs import bpffs_root

        bpffs_root()
    except RpctlError as e:
        pytest.fail(f"cannot run kernel tests: {e}", pytrace=False)


class Netns:
    def __init__(self, name: str):
        self.name = name


@pytest.fixture
def own_shared_program(monkeypatch):
    """Groups this process makes get a shared program of their own (a name no
    other group's has): the test loads it, and sees it go with its groups,
    whatever other groups live on the host.  Returns its folder."""
    from rpctl.controller.kernel import loader
    from rpctl.controller.kernel.bpffs import bpffs_root
    from rpctl.controller.store import shared_program

    digest = f"{os.getpid():08x}{id(monkeypatch) & 0xFFFFFFFF:08x}"
    monkeypatch.setattr(loader, "shared_digest", lambda names, migrate: digest)
    return os.path.join(shared_program.base_dir(bpffs_root()), shared_program.PREFIX + digest)


@pytest.fixture
def netns():
    """A fresh network namespace with loopback up, entered for the test."""
    with fresh_netns() as name:
        yield Netns(name)


class Cli:
    """rpctl in-process: exit code, stdout and stderr of one command."""

    def __call__(self, *argv: str):
        from tests.support.cli import invoke

        return invoke(argv)

    def ok(self, *argv: str) -> str:
        code, out, err = self(*argv)
        assert code == 0, f"rpctl {' '.join(map(str, argv))} exited {code}: {err}"
        return out

    def subprocess(self, *argv: str, env=None, **kw) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "rpctl.cli", *map(str, argv)],
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
def make_members(netns):
    """Members(...) factory (always in the test's own namespace) whose sockets are closed after the test."""
    from tests.support.traffic import Members

    made = []

    def make(**kw):
        m = Members(**kw)
        made.append(m)
        return m

    yield make
    for m in made:
        m.close()


@pytest.fixture
def launch(netns, tmp_path):
    """Start `rpctl run ARGS -- CMD` subprocesses (or another long-running
    command: argv=[...], with env={...}); all stopped after the test, which
    fails if any child outlived its launcher."""
    from tests.support.launched import Run

    runs = []

    def start(args: list, cmd: list, **kw) -> Run:
        r = Run(tmp_path, args, cmd, **kw)
        runs.append(r)
        return r

    yield start
    leftovers = []
    # The newest first: a serve started after another was SIGKILLed stops the
    # children it took back from it, which the older one's cleanup then finds gone.
    for r in reversed(runs):
        leftovers += r.cleanup()
    assert not leftovers, f"children left behind: {leftovers}"


@pytest.fixture
def nginx(netns, tmp_path):
    """start(port=P, workers=N, cpu_affinity=False, name=""): a real nginx (tests/support/nginx.py)
    in the test's namespace, ready; stopped after the test.  A name gives it a folder of its
    own (tmp_path/name), for a second nginx beside the first."""
    from tests.support.nginx import NGINX, Nginx

    if not os.access(NGINX, os.X_OK):
        pytest.fail(f"{NGINX} is missing: apt-get install nginx-light (scripts/provision.sh --with-tests)")
    made = []

    def start(port: int, workers: int, name: str = "", **kw) -> Nginx:
        folder = tmp_path / name
        folder.mkdir(exist_ok=True)
        n = Nginx(folder, port=port, workers=workers, **kw)
        made.append(n)
        n.wait_ready()
        return n

    try:
        yield start
    finally:
        for n in made:
            n.stop()
