"""What this kernel and this process can do: the checks behind `rpctl doctor`.

Each check says what is wrong and how to fix it, in one line each.
"""

from __future__ import annotations

import os
import platform
import re
from dataclasses import dataclass
from typing import Callable, Optional

from ..contract.errors import PermissionDenied, RpctlError, Unsupported
from .proc_files import read_text

# Batch map operations (one-call table publish) and pidfd_getfd.
MIN_KERNEL = (5, 6)
# BPF_SK_REUSEPORT_SELECT_OR_MIGRATE: the program places the requests of a
# closing listener.
MIGRATE_KERNEL = (5, 14)

CAP_NET_ADMIN = 12
CAP_SYS_PTRACE = 19
CAP_SYS_ADMIN = 21
CAP_PERFMON = 38
CAP_BPF = 39


def kernel_version(release: Optional[str] = None) -> tuple[int, int]:
    m = re.match(r"^(\d+)\.(\d+)", release or platform.release())
    if not m:
        raise Unsupported(f"cannot read the kernel version from {release or platform.release()!r}")
    return int(m.group(1)), int(m.group(2))


def kernel_at_least(version: tuple[int, int]) -> bool:
    return kernel_version() >= version


def caps_of_status(text: str) -> int:
    """The effective capability mask in the text of /proc/PID/status; 0 (none) when it does not say."""
    for line in text.splitlines():
        if line.startswith("CapEff:"):
            mask = line[len("CapEff:"):].strip()
            return int(mask, 16) if re.fullmatch(r"[0-9a-fA-F]{1,32}", mask) else 0
    return 0


def effective_caps() -> int:
    return caps_of_status(read_text("/proc/self/status"))


def has_cap(cap: int, caps: Optional[int] = None) -> bool:
    return bool((effective_caps() if caps is None else caps) >> cap & 1)


def require_kernel() -> None:
    if kernel_version() < MIN_KERNEL:
        raise Unsupported(
            f"kernel {platform.release()} is too old: rpctl needs Linux {MIN_KERNEL[0]}.{MIN_KERNEL[1]}+ "
            "(5.14+ for listener migration)"
        )


def require_bpf_privileges(what: str) -> None:
    caps = effective_caps()
    bpf_ok = has_cap(CAP_SYS_ADMIN, caps) or (has_cap(CAP_BPF, caps) and has_cap(CAP_NET_ADMIN, caps))
    if not bpf_ok:
        raise PermissionDenied(f"{what}: needs root (or CAP_BPF and CAP_NET_ADMIN)")


def require_ptrace(what: str) -> None:
    if not has_cap(CAP_SYS_PTRACE):
        raise PermissionDenied(f"{what}: taking another process's socket needs CAP_SYS_PTRACE (run as root)")


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    # A warning does not make doctor fail: rpctl works, with less.
    warning: bool = False


def _check(name: str, fn: Callable[[], str], fix: str = "") -> Check:
    try:
        return Check(name, True, fn())
    except RpctlError as e:
        return Check(name, False, str(e), fix)
    except OSError as e:
        return Check(name, False, str(e), fix)


def run_checks() -> list[Check]:
    """Every check doctor prints, in order."""
    checks: list[Check] = []

    def kernel() -> str:
        require_kernel()
        return f"Linux {platform.release()}"

    checks.append(_check("kernel", kernel, "use Linux 5.6+ (the Vagrantfile gives a VM with 6.1)"))

    migrate = kernel_at_least(MIGRATE_KERNEL)
    checks.append(
        Check(
            "listener migration",
            migrate,
            "the program places a closing listener's queued connections"
            if migrate
            else "kernel older than 5.14: a closing listener drops its queued connections",
            "use Linux 5.14+",
            warning=True,
        )
    )

    def privileges() -> str:
        require_bpf_privileges("load and attach programs")
        require_ptrace("register members")
        return "root or CAP_BPF+CAP_NET_ADMIN+CAP_SYS_PTRACE"

    checks.append(_check("privileges", privileges, "run as root"))

    def bpffs() -> str:
        from . import bpffs

        return f"mounted at {bpffs.bpffs_root(mount=False)}"

    checks.append(_check("bpffs", bpffs, "mount -t bpf bpf /sys/fs/bpf (rpctl mounts it itself when root)"))

    def headers() -> str:
        from .headers import find_kernel_source

        tree = find_kernel_source(build=os.geteuid() == 0)
        return tree or f"/lib/modules/{platform.release()}/build"

    checks.append(_check("kernel headers", headers, "apt-get install linux-headers-amd64"))

    def bcc() -> str:
        try:
            import bcc as bcc_module  # noqa: F401
        except ImportError:
            raise Unsupported("bcc is not importable") from None
        return f"bcc from {os.path.dirname(bcc_module.__file__)}"

    checks.append(
        _check(
            "bcc",
            bcc,
            "apt-get install python3-bpfcc, and use a virtualenv made with --system-site-packages",
        )
    )

    from . import compiled

    usable, detail = compiled.kept()
    checks.append(Check("compiled programs", usable, detail,
                        f"chown root and chmod 700 {compiled.folder_in_use()}, or set {compiled.CACHE_ENV}",
                        warning=True))

    def migrate_sysctl() -> str:
        with open("/proc/sys/net/ipv4/tcp_migrate_req") as f:
            value = f.read().strip()
        return f"net.ipv4.tcp_migrate_req={value} (not needed: rpctl's program decides migrations itself)"

    if migrate:
        checks.append(_check("tcp_migrate_req", migrate_sysctl))
    return checks
