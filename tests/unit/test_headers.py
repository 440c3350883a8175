"""controller/kernel/headers.py: the kernel header tree bcc is given, found or built (no privileges)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from rpctl.controller.contract.errors import Unsupported
from rpctl.controller.kernel import headers


def _fake_debian_headers(root, release="6.1.0-99"):
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    common = root / "src" / f"linux-headers-{release}-common"
    arch_dir = root / "src" / f"linux-headers-{release}-{arch}"
    (common / "include" / "linux").mkdir(parents=True)
    (common / "include" / "linux" / "kconfig.h").write_text("/* common */\n")
    (common / "arch" / "x86" / "include" / "asm").mkdir(parents=True)
    (common / "arch" / "x86" / "include" / "asm" / "a.h").write_text("/* asm */\n")
    (arch_dir / "include" / "generated").mkdir(parents=True)
    (arch_dir / "include" / "generated" / "autoconf.h").write_text("#define CONFIG_X 1\n")
    (arch_dir / "arch" / "x86" / "include" / "generated").mkdir(parents=True)
    (arch_dir / ".config").write_text("CONFIG_X=y\n")
    return f"{release}-{arch}"


def test_debian_header_halves_are_merged_into_one_tree(tmp_path, monkeypatch):
    name = _fake_debian_headers(tmp_path)
    monkeypatch.delenv("BCC_KERNEL_SOURCE", raising=False)
    monkeypatch.setattr(headers, "SRC_DIR", str(tmp_path / "src"))
    monkeypatch.setattr(headers, "CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(platform, "release", lambda: "0.0.0-no-such-kernel")
    tree = headers.find_kernel_source()
    assert tree == str(tmp_path / "cache" / name)
    # Both halves are visible through the one tree, arch-specific files too.
    assert Path(tree, "include/linux/kconfig.h").read_text() == "/* common */\n"
    assert Path(tree, "include/generated/autoconf.h").read_text().startswith("#define")
    assert os.path.exists(os.path.join(tree, "arch/x86/include/asm/a.h"))
    assert os.path.isdir(os.path.join(tree, "arch/x86/include/generated"))
    assert os.path.exists(os.path.join(tree, ".config"))
    # A second call finds the tree already built.
    assert headers.find_kernel_source(build=False) == tree


def test_no_headers_anywhere_fails_with_what_to_install(tmp_path, monkeypatch):
    monkeypatch.delenv("BCC_KERNEL_SOURCE", raising=False)
    monkeypatch.setattr(headers, "SRC_DIR", str(tmp_path / "empty"))
    monkeypatch.setattr(headers, "CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(platform, "release", lambda: "0.0.0-no-such-kernel")
    with pytest.raises(Unsupported) as e:
        headers.find_kernel_source()
    assert "apt-get install linux-headers-" in str(e.value)


def test_bcc_kernel_source_that_is_not_a_tree_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("BCC_KERNEL_SOURCE", str(tmp_path))
    with pytest.raises(Unsupported) as e:
        headers.find_kernel_source()
    assert "BCC_KERNEL_SOURCE" in str(e.value)


# Header folders of any release name: ordered newest first, never a crash ---------------------

releases = st.lists(st.from_regex(r"[0-9a-z.+~-]{1,16}", fullmatch=True).filter(lambda r: r.strip(".") and "/" not in r)
                    | st.sampled_from(["6.1.0-13", "6.1.0-rc7", "6.12.12+bpo", "6.1.0-²", "6.1.0-13-rt"]),
                    min_size=2, max_size=4, unique=True)


@given(releases)
@example(["6.1.0-13", "6.1.0-rc7"])  # 13 against 'rc7': int and str cannot be ordered
def test_any_installed_releases_are_ordered_newest_first(tmp_path_factory, names):
    src = tmp_path_factory.mktemp("src")
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    for release in names:
        (src / f"linux-headers-{release}-common").mkdir()
        (src / f"linux-headers-{release}-{arch}").mkdir()
    assert sorted(r for r, _, _ in headers.debian_pairs(str(src))) == sorted(f"{r}-{arch}" for r in names)
