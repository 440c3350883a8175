"""Try every rpctl command as another user (nobody) against a live group: who may change steering.

Every command of the command table (cli/commands.py) is tried, so that a new
command is tried too (a command without a case here fails the test).  A write
fails with exit 5 and its one line, and changes nothing: the group's maps stay
byte for byte, no folder or pin appears or goes.  A read works, or fails with
its one line; never a traceback.  The state folders and pins in bpffs are
root's alone: nobody can list a group, let alone open its maps.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tempfile

import pytest
from rpctl.cli.commands import COMMANDS
from rpctl.controller.store.state import Layout

from tests.support.cli import assert_one_error_line
from tests.support.pinned import pinned_bytes

pytestmark = pytest.mark.kernel

PORT = 7390
NOBODY = 65534
CONFIG = f"""\
[[group]]
name = "web"
listen = "tcp:127.0.0.1:{PORT}"
adopt = {{ comm = "nginx" }}
generations = {{ canary = 5 }}
"""


# A server of another user on the group's port: the kernel keeps a SO_REUSEPORT group
# to the sockets of one user, so its socket cannot join (the demo worker, a server
# and not an rpctl command, says so in its own one line).
INTRUDER = ["demo-worker", "--name", "intruder", "--listen", f"127.0.0.1:{PORT}"]


def tries(config: str, pid: int) -> list[tuple[bool, list]]:
    """(writes, argv): what nobody tries, for every command (its first word) of the command table."""
    worker = [sys.executable, "-m", "rpctl.cli.demo.worker", "--name", "$RPCTL_MEMBER"]
    return [
        (True, ["register", "intruder", "--pid", pid, "--fd", 3, "--group", "web"]),
        (True, ["unregister", "nginx-1"]),
        (True, ["unload", "--group", "web"]),
        (True, ["unload", "--group", "web", "--force"]),
        (True, ["weights", "nginx-1=3"]),
        (False, ["weights"]),
        (True, ["drain", "nginx-1"]),
        (True, ["drain", "nginx-1", "--wait", "--timeout", 1]),
        (True, ["undrain", "nginx-1"]),
        (False, ["status"]),
        (False, ["status", "--json", "--group", "web"]),
        (False, ["doctor"]),
        (True, ["cleanup"]),
        (False, ["cleanup", "--dry-run"]),
        (True, ["demo", "--port", PORT + 1]),
        (False, INTRUDER),
        (False, ["dashboard", "--frames", 1]),
        (False, ["discover", "--port", PORT]),
        (True, ["adopt", "--port", PORT]),
        (True, ["apply", "-c", config]),
        (False, ["apply", "-c", config, "--dry-run"]),
        (True, ["run", "--group", "web", "-n", 1, "--listen", f"127.0.0.1:{PORT}", "--", *worker]),
        (True, ["run", "--group", "other", "-n", 1, "--listen", f"127.0.0.1:{PORT + 2}", "--", *worker]),
        (True, ["restart", "nginx-1"]),
        (True, ["rollout", "--group", "web"]),
        (False, ["metrics", "--listen", "127.0.0.1:0"]),
        (True, ["serve", "-c", config]),
        (True, ["promote", "web", "-c", config]),
        (True, ["rollback", "web", "-c", config]),
        (True, ["pin", "cpu"]),
        (True, ["pin", "off"]),
        (True, ["pin", "rss", "--dev", "lo"]),
        (False, ["pin", "rss", "--dev", "lo", "--explain"]),
    ]


def as_nobody(argv: list) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rpctl.cli", *map(str, argv)],
        user=NOBODY, group=NOBODY, extra_groups=[], cwd="/",
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
    )


def state_tree() -> dict[str, tuple[int, int]]:
    """Every folder and pin of this namespace's state: (owner, mode) by path."""
    top = Layout().ns_dir
    out = {top: (os.lstat(top).st_uid, stat.S_IMODE(os.lstat(top).st_mode))}
    for folder, dirs, files in os.walk(top):
        for name in dirs + files:
            st = os.lstat(os.path.join(folder, name))
            out[os.path.join(folder, name)] = (st.st_uid, stat.S_IMODE(st.st_mode))
    return out


@pytest.fixture
def config_file():
    """The group's file, where nobody may read it (pytest's tmp_path is root's alone)."""
    with tempfile.TemporaryDirectory() as folder:
        os.chmod(folder, 0o755)
        path = os.path.join(folder, "rpctl.toml")
        with open(path, "w") as f:
            f.write(CONFIG)
        os.chmod(path, 0o644)
        yield path


def test_nobody_changes_nothing_and_reads_nothing(netns, nginx, rpctl, config_file):
    ngx = nginx(port=PORT, workers=2)
    rpctl.ok("apply", "-c", config_file)
    assert Layout().groups() == ["web"]
    before, tree = pinned_bytes(), state_tree()

    cases = tries(config_file, ngx.proc.pid)
    untried = {c.name for c in COMMANDS} - {argv[0] for _, argv in cases}
    assert not untried, f"commands nobody has not tried: add them to tries(): {sorted(untried)}"

    wrong = []
    for writes, argv in cases:
        done = as_nobody(argv)
        said = f"rpctl {' '.join(map(str, argv))} as nobody: exit {done.returncode}: {done.stderr!r}"
        if "Traceback" in done.stderr + done.stdout:
            wrong.append(f"{said}: a traceback")
        elif argv is INTRUDER:
            if done.returncode == 0 or done.stderr.count("\n") != 1 or "Address already in use" not in done.stderr:
                wrong.append(f"{said}: joined the port, or did not say why not in one line")
        elif writes and done.returncode != 5:
            wrong.append(f"{said}: not exit 5")
        elif done.returncode != 0 and not (argv[0] == "doctor" and done.stderr == ""):
            try:
                line = assert_one_error_line(done.stderr)
            except AssertionError as e:
                wrong.append(f"{said}: {e}")
                continue
            if done.returncode == 5 and "root" not in line:
                wrong.append(f"{said}: the line does not say what is missing")
    assert not wrong, "\n".join(wrong)
    assert pinned_bytes() == before, "a command of nobody's changed the pinned maps"
    assert state_tree() == tree, "a command of nobody's changed the state folders"


def test_state_folders_and_pins_are_roots_alone(netns, nginx, rpctl, config_file):
    nginx(port=PORT, workers=2)
    old = os.umask(0)  # what rpctl makes does not depend on the umask of who runs it
    try:
        rpctl.ok("apply", "-c", config_file)
    finally:
        os.umask(old)
    layout = Layout()
    tree = state_tree()
    tree[os.path.dirname(layout.ns_dir)] = (os.stat(os.path.dirname(layout.ns_dir)).st_uid,
                                            stat.S_IMODE(os.stat(os.path.dirname(layout.ns_dir)).st_mode))
    assert any(path.endswith("/web/prog") for path in tree), sorted(tree)
    for path, (owner, mode) in tree.items():
        want = 0o700 if os.path.isdir(path) else 0o600
        assert (owner, mode) == (0, want), f"{path}: uid {owner} mode {mode:o}, want uid 0 mode {want:o}"
    # And so nobody cannot even list them.
    done = subprocess.run(["ls", layout.group_dir("web")], user=NOBODY, group=NOBODY, extra_groups=[],
                          capture_output=True, text=True)
    assert done.returncode != 0 and "Permission denied" in done.stderr, done
