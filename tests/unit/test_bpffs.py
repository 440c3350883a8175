"""controller/kernel/bpffs.py's folders of rpctl's own, in a folder of tmp_path (no bpffs, no privileges)."""

from __future__ import annotations

import os
import re

import pytest
from rpctl.controller.contract.errors import PermissionDenied, StateError
from rpctl.controller.kernel import bpffs


def mode_of(path) -> int:
    return os.stat(path).st_mode & 0o7777


def test_a_private_folder_is_made_for_its_user_alone_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        bpffs.private_folder(str(tmp_path / "rpctl"))
    finally:
        os.umask(old)
    assert mode_of(tmp_path / "rpctl") == bpffs.FOLDER_MODE == 0o700


def test_a_private_folder_made_more_open_before_is_closed_again(tmp_path):
    folder = tmp_path / "rpctl"
    folder.mkdir()
    os.chmod(folder, 0o755)  # as an rpctl of before made it, beside its namespaces' folders
    (folder / "netns1").mkdir(mode=0o700)
    bpffs.private_folder(str(folder))
    assert mode_of(folder) == 0o700
    assert os.listdir(folder) == ["netns1"], "what is in it stays"


def test_another_users_folder_is_refused_and_left_as_it_is(tmp_path, monkeypatch):
    folder = tmp_path / "rpctl"
    folder.mkdir(mode=0o777)
    os.chmod(folder, 0o777)
    owner = os.stat(folder).st_uid
    monkeypatch.setattr(os, "geteuid", lambda: owner + 1)  # someone else made it first
    with pytest.raises(StateError, match=re.escape(f"{folder} is a folder of uid {owner}, not of this user")):
        bpffs.private_folder(str(folder))
    assert mode_of(folder) == 0o777


def test_a_file_where_the_folder_goes_is_refused(tmp_path):
    (tmp_path / "rpctl").write_text("")
    with pytest.raises(StateError, match="is not a folder of uid"):
        bpffs.private_folder(str(tmp_path / "rpctl"))


def test_a_folder_that_cannot_be_made_is_permission_denied(tmp_path, monkeypatch):
    def refuse(path, mode=0o777):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(os, "mkdir", refuse)
    with pytest.raises(PermissionDenied, match=re.escape(f"create {tmp_path}/rpctl: permission denied (run as root)")):
        bpffs.private_folder(str(tmp_path / "rpctl"))
