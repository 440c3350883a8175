"""controller/kernel/proc_files.py: a /proc file's text whatever bytes it holds."""

from __future__ import annotations

import os

from rpctl.controller.kernel.proc_files import read_text


def test_bytes_that_are_not_utf8_are_shown_replaced_and_kept_in_paths(tmp_path):
    path = tmp_path / "mountinfo"
    path.write_bytes(b"45 43 0:4 net:[1] /run/netns/\xff\xfe rw - nsfs nsfs rw\n")
    assert "/run/netns/\ufffd\ufffd " in read_text(str(path))
    mount_point = read_text(str(path), paths=True).split()[4]
    assert os.fsencode(mount_point) == b"/run/netns/\xff\xfe"
