"""State folders of network namespaces that no longer exist: found and removed.

bpffs keeps one folder per network namespace (state.Layout: "netns<cookie>",
or "net<inode>" before Linux 5.14).  Nothing removes it when its namespace
goes away, and a group of a dead namespace steers nothing: its sockets
closed with the namespace.  A folder is stale when no way of reaching its
namespace is found:

- a thread of a process in it (/proc/*/task/*/ns/net);
- a bind mount of it (`ip netns add` makes one under /run/netns), as every
  mount namespace's mountinfo lists it (nsfs mounts);
- a file descriptor of it held by a process (/proc/*/fd/* -> "net:[...]").

What can still be missed, and why removing is safe anyway: a namespace held
only by something this process cannot see (a process of another PID
namespace; a process it may not inspect under the ptrace rules, as a
container's more privileged init; a mount namespace no visible process is
in; a socket created in the namespace and passed to a process elsewhere).
A socket keeps its namespace alive, and a member is a socket: so a folder is
also kept while any of its groups still has a socket in its socket array.
A folder whose namespace is unseen and whose groups hold no socket steers
nothing and cannot steer again without a new registration; removing it
loses only the settings of groups with no member left.  A namespace that is
found but cannot be entered to read its cookie (no CAP_SYS_ADMIN) leaves
every folder in doubt: then nothing is called stale (PermissionDenied).

Folders are listed before the namespaces are: a folder made by a namespace
created during the scan is never taken for a dead one's.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import logging
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass

from ..contract import abi
from ..contract.errors import PermissionDenied
from ..kernel import bpffs
from ..kernel.maps import Map
from ..kernel.proc_files import read_text
from ..kernel.sockets import process_exists
from . import audit, shared_program
from .state import CLONE_NEWNET, Layout, in_netns, netns_id

log = logging.getLogger("rpctl")

NS_GET_NSTYPE = 0xB703  # _IO(0xb7, 0x3), linux/nsfs.h
# The folder names state.netns_id() gives a namespace.
_FOLDER_RE = re.compile(r"^(netns|net)(\d+)$")
_NET_LINK_RE = re.compile(r"^net:\[(\d+)\]$")
# A folder being removed (renamed away first), by the pid removing it.
_DOOMED_RE = re.compile(r"^_del-(?:netns|net)\d+-(\d+)$")
_GONE = (FileNotFoundError, ProcessLookupError, NotADirectoryError)


@dataclass(frozen=True)
class StaleFolder:
    """The state folder of a namespace that no longer exists."""

    netns: str  # the folder's name: "netns<cookie>" or "net<inode>"
    path: str
    groups: list[str]


class IncompleteScan(Exception):
    """A namespace could not be identified: the scan cannot prove any folder stale."""

    def __init__(self, text: str, err: int):
        super().__init__(text)
        self.errno = err


def _pids() -> list[str]:
    return [p for p in os.listdir("/proc") if p.isdigit()]


def _namespace_paths(unreadable: set[str]) -> Iterator[str]:
    """Paths that open a live network namespace: of tasks, nsfs mounts and held fds.
    Processes this one may not inspect (ptrace access rules) are added to `unreadable`."""
    mount_namespaces: set[int] = set()
    nsfs_dev = os.stat("/proc/self/ns/net").st_dev  # every namespace file lives on nsfs
    for pid in _pids():
        try:
            tids = os.listdir(f"/proc/{pid}/task")
            for tid in tids:
                yield f"/proc/{pid}/task/{tid}/ns/net"
            # Bind mounts, once per mount namespace, reached through a process in it.
            mnt = os.stat(f"/proc/{pid}/ns/mnt").st_ino
            if mnt not in mount_namespaces:
                mounts = list(_nsfs_mounts(pid))  # read before marking: a denied read leaves it to another process
                mount_namespaces.add(mnt)
                yield from mounts
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(*_GONE):  # closed since the listing
                    if _is_nsfs_fd(f"/proc/{pid}/fd/{fd}", nsfs_dev):
                        yield f"/proc/{pid}/fd/{fd}"
        except _GONE:
            continue  # the process exited during the scan
        except PermissionError:
            unreadable.add(pid)


def _is_nsfs_fd(path: str, nsfs_dev: int) -> bool:
    """Whether a /proc/PID/fd/N is a namespace file (of any type: open() tells a network one).
    One opened through /proc/PID/ns reads "net:[INODE]"; one opened through a bind
    mount reads as the mount's path, or "/" once it is unmounted (`ip netns del`)."""
    link = os.readlink(path)
    if _NET_LINK_RE.match(link):
        return True
    return link.startswith("/") and os.stat(path).st_dev == nsfs_dev


def _nsfs_mounts(pid: str) -> Iterator[str]:
    text = read_text(f"/proc/{pid}/mountinfo", paths=True)
    for mount_point in net_namespace_mounts(text):
        yield f"/proc/{pid}/root{mount_point}"


def net_namespace_mounts(mountinfo: str) -> list[str]:
    """Mount points of network namespace files (nsfs, root "net:[INODE]") in a mountinfo."""
    out = []
    for line in mountinfo.splitlines():
        fields = line.split()
        # ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
        try:
            dash = fields.index("-", 6)  # after the six fields every line has
            fstype = fields[dash + 1]
        except (ValueError, IndexError):
            continue
        if fstype == "nsfs" and _NET_LINK_RE.match(fields[3]):
            # mountinfo writes space, tab, newline and backslash as octal escapes.
            out.append(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4]))
    return out


def live_netns_ids(unreadable: set[str] | None = None) -> set[str]:
    """The folder names ("netns<cookie>" and "net<inode>") of every network
    namespace found alive; the pids whose namespaces could not be read go to
    `unreadable`.  Raises IncompleteScan when a namespace was found but could not
    be entered to read its cookie."""
    unreadable = set() if unreadable is None else unreadable
    seen: set[tuple[int, int]] = set()
    names = {netns_id()}
    for path in _namespace_paths(unreadable):
        try:
            st = os.stat(path)
            if (st.st_dev, st.st_ino) in seen:
                continue  # a namespace already named: most tasks share a few
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except _GONE:
            continue  # the task, mount or fd went away since it was listed
        except PermissionError:
            unreadable.add(path.split("/")[2])
            continue
        try:
            seen.add((st.st_dev, st.st_ino))
            if fcntl.ioctl(fd, NS_GET_NSTYPE) != CLONE_NEWNET:
                continue  # a mount, PID, user... namespace held by an fd
            names.add(f"net{st.st_ino}")
            try:
                names.add(in_netns(fd, netns_id))
            except OSError as e:
                raise IncompleteScan(f"enter the network namespace of {path}: {os.strerror(e.errno)}",
                                     e.errno) from None
        finally:
            os.close(fd)
    return names


def _holds_a_socket(group_dir: str) -> bool:
    """Whether a group's socket array still has a socket (unreadable: assume it does)."""
    path = os.path.join(group_dir, "socks")
    if not os.path.exists(path):
        return False  # an incomplete folder: nothing to steer
    try:
        socks = Map.open_pinned(path, abi.MAP_SPECS["socks"])
    except Exception as e:  # noqa: BLE001 - any doubt keeps the folder
        log.debug("keep %s: cannot read its socket array (%s)", group_dir, e)
        return True
    with contextlib.closing(socks):
        return any(socks.get(i, ctypes.c_uint64) is not None for i in range(abi.RP_MAX_MEMBERS))


def _folders(root: str) -> list[tuple[str, str]]:
    base = os.path.join(root, "rpctl")
    try:
        names = os.listdir(base)
    except FileNotFoundError:
        return []
    return [(n, os.path.join(base, n)) for n in sorted(names) if _FOLDER_RE.match(n)]


def stale_folders(root: str | None = None) -> list[StaleFolder]:
    """Folders of namespaces that no longer exist (empty when in doubt).
    PermissionDenied when this process may not see every namespace."""
    root = root if root is not None else bpffs.bpffs_root(mount=False)
    folders = _folders(root)  # before the scan: see the module's docstring
    if not folders:
        return []
    unreadable: set[str] = set()
    try:
        live = live_netns_ids(unreadable)
    except IncompleteScan as e:
        if e.errno in (errno.EPERM, errno.EACCES):
            raise PermissionDenied(f"tell which state folders are stale: {e} (run as root)") from None
        log.info("no state folder is called stale: %s", e)
        return []
    if unreadable:
        # Their namespaces are unseen: only the socket check below protects their folders.
        log.debug("namespaces of processes %s not readable", ", ".join(sorted(unreadable, key=int)))
    out = []
    for name, path in folders:
        if name in live:
            continue
        groups = Layout(root=root, netns=name).groups()
        if any(_holds_a_socket(os.path.join(path, g)) for g in groups):
            log.info("keep %s: a group there still has a socket, so its namespace exists", path)
            continue
        out.append(StaleFolder(netns=name, path=path, groups=groups))
    return out


def remove_stale(dry_run: bool = False, root: str | None = None) -> list[StaleFolder]:
    """Remove (or with dry_run only list) the state folders of dead namespaces."""
    root = root if root is not None else bpffs.bpffs_root(mount=False)
    found = stale_folders(root)
    if dry_run:
        return found
    _sweep_doomed(root)
    removed = []
    for folder in found:
        try:
            _remove(folder)
        except FileNotFoundError:
            continue  # another cleanup removed it first
        except PermissionError:
            raise PermissionDenied(f"remove {folder.path}: permission denied (run as root)") from None
        log.debug("removed %s (groups: %s)", folder.path, ", ".join(folder.groups) or "none")
        audit.namespace_removed(folder.netns, folder.groups)
        removed.append(folder)
    # Their groups' slots of the shared program are free again, and those of
    # any group whose folder went without an unload.
    shared_program.sweep(root)
    return removed


def _remove(folder: StaleFolder) -> None:
    """Under the namespace folder's lock (as state.Layout.ns_lock takes it), renamed
    away first so that no reader sees half of it, then unpinned."""
    layout = Layout(root=os.path.dirname(os.path.dirname(folder.path)), netns=folder.netns)
    with layout.ns_lock():
        doomed = os.path.join(os.path.dirname(folder.path), f"_del-{folder.netns}-{os.getpid()}")
        os.rename(folder.path, doomed)
    shutil.rmtree(doomed)


def _sweep_doomed(root: str) -> None:
    """Finish removals whose remover died after the rename."""
    base = os.path.join(root, "rpctl")
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(base):
            m = _DOOMED_RE.match(name)
            if m and not process_exists(int(m.group(1))):
                shutil.rmtree(os.path.join(base, name), ignore_errors=True)
