"""Find, or build, the kernel header tree bcc compiles against.

bcc looks in /lib/modules/$(uname -r)/build.  Kernels of VMs and containers
often ship no headers at all; Debian's linux-headers-<arch> package (the
6.1 series on Debian 12) works for an SK_REUSEPORT program once its
-common and -<arch> folders are merged into one tree, which is what bcc
expects.  rpctl builds that tree as a farm of symlinks under
/var/cache/rpctl/kernel-headers/ and points bcc at it with
BCC_KERNEL_SOURCE.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
from typing import Optional

from ..contract.errors import Unsupported

CACHE_DIR = "/var/cache/rpctl/kernel-headers"
SRC_DIR = "/usr/src"

# Files whose presence makes a tree usable: one from each half.
_MARKERS = ("include/linux/kconfig.h", "include/generated/autoconf.h")

_DEB_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "ppc64le": "ppc64el", "s390x": "s390x"}


def _usable(tree: str) -> bool:
    return all(os.path.exists(os.path.join(tree, m)) for m in _MARKERS)


def _version_key(name: str) -> tuple:
    # (0, number) or (1, text) for each part: "13" and "rc7" in one place of two releases must compare.
    return tuple((0, int(x), "") if x.isascii() and x.isdigit() else (1, 0, x) for x in re.split(r"[.-]", name))


def debian_pairs(src: str = "") -> list[tuple[str, str, str]]:
    """(release, common folder, arch folder) of installed Debian header packages, newest first."""
    arch = _DEB_ARCH.get(platform.machine(), platform.machine())
    src = src or SRC_DIR
    pairs = []
    try:
        names = os.listdir(src)
    except FileNotFoundError:
        return []
    for name in names:
        m = re.match(rf"^linux-headers-(.+)-{re.escape(arch)}$", name)
        if not m:
            continue
        common = os.path.join(src, f"linux-headers-{m.group(1)}-common")
        if os.path.isdir(common):
            pairs.append((f"{m.group(1)}-{arch}", common, os.path.join(src, name)))
    return sorted(pairs, key=lambda p: _version_key(p[0]), reverse=True)


def _merge(dst: str, layers: list[str]) -> None:
    """Symlink farm of `layers`, later layers winning; folders present in
    one layer only become one symlink."""
    os.makedirs(dst, exist_ok=True)
    entries: dict[str, list[str]] = {}
    for layer in layers:
        for name in os.listdir(layer):
            entries.setdefault(name, []).append(os.path.join(layer, name))
    for name, paths in entries.items():
        target = os.path.join(dst, name)
        dirs = [p for p in paths if os.path.isdir(p)]
        if len(dirs) > 1 and len(dirs) == len(paths):
            _merge(target, dirs)
        else:
            os.symlink(os.path.realpath(paths[-1]), target)


def build_tree(release: str, common: str, arch_dir: str, cache: str = CACHE_DIR) -> str:
    tree = os.path.join(cache, release)
    if _usable(tree):
        return tree
    os.makedirs(cache, exist_ok=True)
    tmp = f"{tree}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    _merge(tmp, [common, arch_dir])
    shutil.rmtree(tree, ignore_errors=True)
    os.rename(tmp, tree)
    return tree


def find_kernel_source(build: bool = True) -> Optional[str]:
    """The tree to give bcc through BCC_KERNEL_SOURCE, or None when bcc's
    default (/lib/modules/$(uname -r)/build) is already usable.

    Raises Unsupported with what to install when there is no tree at all.
    """
    given = os.environ.get("BCC_KERNEL_SOURCE")
    if given:
        if _usable(given):
            return given
        raise Unsupported(f"BCC_KERNEL_SOURCE={given} is not a kernel header tree (no {' or '.join(_MARKERS)})")
    modules = f"/lib/modules/{platform.release()}"
    # bcc itself pairs build/ (generated headers) with source/ (the rest).
    if os.path.exists(f"{modules}/build/{_MARKERS[1]}") and any(
        os.path.exists(f"{modules}/{half}/{_MARKERS[0]}") for half in ("build", "source")
    ):
        return None
    pairs = debian_pairs()
    for release, common, arch_dir in pairs:
        tree = os.path.join(CACHE_DIR, release)
        if _usable(tree):
            return tree
        if build:
            try:
                return build_tree(release, common, arch_dir, CACHE_DIR)
            except OSError as e:
                raise Unsupported(f"build kernel header tree in {CACHE_DIR}: {e}") from None
    arch = _DEB_ARCH.get(platform.machine(), platform.machine())
    raise Unsupported(
        f"no kernel headers for bcc: /lib/modules/{platform.release()}/build is missing and no Debian header "
        f"package is installed; run `apt-get install linux-headers-{arch}` or set BCC_KERNEL_SOURCE"
    )
