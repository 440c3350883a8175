"""Hostile input against a live group: damaged files sent to `rpctl apply` and to `rpctl serve`
(SIGHUP), and weights and CPU maps no one should type.  Each is refused in one line with its
exit code (serve logs it and keeps its last good file), and the group's pinned maps stay byte
for byte what they were, as bpftool dumps them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from rpctl.controller.contract.errors import RpctlError
from rpctl.controller.ops import config
from rpctl.controller.store.state import Layout

from tests.support import hostile
from tests.support.cli import assert_one_error_line

pytestmark = pytest.mark.kernel

PORT = 7320
WORKER = [sys.executable, "-m", "rpctl.cli.demo.worker", "--name", "$RPCTL_MEMBER"]
GOOD = textwrap.dedent(f"""\
    [[group]]
    name = "web"
    listen = "tcp:127.0.0.1:{PORT}"
    run = {{ command = [{", ".join(f'"{a}"' for a in WORKER)}], count = 2 }}
    weights = {{ "worker-2" = 3 }}
    """)
MEMBERS = {"worker-1", "worker-2"}
# Examples a kernel test can afford: each is a command against the live group.
FILES, ARGUMENTS, SIGHUPS = 40, 60, 4


def pinned_maps(group: str = "web") -> dict[str, object]:
    """Every map of the group's folder as bpftool dumps it (the program left out: it is no map)."""
    folder = Layout().group_dir(group)
    out = {}
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        info = subprocess.run(["bpftool", "-j", "map", "show", "pinned", path], capture_output=True, text=True)
        if info.returncode != 0:
            continue  # the program
        dump = subprocess.run(["bpftool", "-j", "map", "dump", "pinned", path], capture_output=True, text=True)
        assert dump.returncode == 0, f"bpftool map dump pinned {path}: {dump.stderr}"
        out[name] = json.loads(dump.stdout)
    assert {"ctl", "members", "socks"} <= set(out), sorted(out)
    return out


@pytest.fixture
def live_group(netns, launch, rpctl, tmp_path):
    """`rpctl serve -c FILE` keeping a run group of two demo workers, worker-2 at weight 3."""
    path = tmp_path / "rpctl.toml"
    path.write_text(GOOD)
    serve = launch([], [], argv=["serve", "-c", str(path)])
    serve.wait_members(rpctl, MEMBERS)
    serve.wait_logged("serving 1 group")  # the file's weights published: what stays as it is
    return serve, path


def test_damaged_files_and_bad_arguments_change_no_pinned_byte(live_group, rpctl, tmp_path):
    serve, path = live_group
    before = pinned_maps()
    seen = {"files": 0, "arguments": 0}

    @settings(max_examples=FILES, derandomize=True, database=None, deadline=None)
    @given(raw=hostile.mutated(GOOD.encode()))
    def damaged_file_to_apply(raw):
        try:
            config.loadb(raw, "f.toml")
        except RpctlError as e:
            want = e.exit_status
        else:
            assume(False)  # still valid (a changed comment): apply would do what it says
        bad = tmp_path / "damaged.toml"
        bad.write_bytes(raw)
        code, out, err = rpctl("apply", "-c", bad)
        assert code == want, (raw, err)
        assert_one_error_line(err)
        seen["files"] += 1

    damaged_file_to_apply()
    assert pinned_maps() == before

    def refused(item: str) -> bool:
        """Not an option, and not a number in range for a member: something to refuse."""
        name, _, value = item.partition("=")
        v = value.strip()
        number = v.isascii() and v.isdigit() and len(v) <= 5 and int(v) <= 10000
        return not item.startswith("-") and not (name in MEMBERS and number)

    items = st.lists((hostile.text | st.tuples(st.sampled_from(sorted(MEMBERS)) | hostile.text,
                                               st.sampled_from(["-1", "10001", "x", "1.5", "", "9" * 5000])
                                               | hostile.text).map(lambda t: f"{t[0]}={t[1]}")).filter(refused),
                     min_size=1, max_size=3)

    @settings(max_examples=ARGUMENTS, derandomize=True, database=None, deadline=None)
    @given(command=st.sampled_from([["weights"], ["pin", "cpu", "--map"]]), args=items)
    def bad_arguments(command, args):
        code, out, err = rpctl(*command, *args)
        assert code in (2, 3, 4), (command, args, code, err)
        if code != 2:  # 2: argparse's usage, then its line
            assert_one_error_line(err)
        seen["arguments"] += 1

    bad_arguments()
    assert pinned_maps() == before

    # serve: a damaged file at each SIGHUP is logged, and the last good one stays.
    for k in range(SIGHUPS):
        raw = GOOD.encode()[: 40 + 23 * k] + b"\xff = [" + GOOD.encode()[40 + 23 * k:]
        path.write_bytes(raw)
        mark = len(serve.stderr())
        serve.proc.send_signal(signal.SIGHUP)
        err = serve.wait_logged("not reread", after=mark)
        assert "Traceback" not in err and serve.proc.poll() is None, err[mark:]
    assert pinned_maps() == before
    print(f"refused without a change: {seen['files']} damaged files (apply), {seen['arguments']} argument "
          f"lists, {SIGHUPS} files at SIGHUP (serve)")
