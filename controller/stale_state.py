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
namespace, a mount namespace no visible process is in, a socket created in
the namespace and passed to a process elsewhere).  A socket keeps its
namespace alive, and a member is a socket: so a folder is also kept while
any of its groups still has a socket in its socket array.  A folder whose
namespace is unseen and whose groups hold no socket steers nothing; removing
it loses only the settings of groups with no member left.  When the
namespaces cannot be listed completely (no privilege to enter one, to read
/proc), nothing is called stale: when in doubt, keep.

Folders are listed before the namespaces are: a folder made by a namespace
created during the scan is never taken for a dead one's.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import re
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from . import abi, state
from .errors import PermissionDenied
from .maps import Map
from .sockets import process_exists
from .state import Layout, netns_id

log = logging.getLogger("rpctl")

CLONE_NEWNET = 0x40000000
# The folder names state.netns_id() gives a namespace.
_FOLDER_RE = re.compile(r"^(netns|net)(\d+)$")
_NET_LINK_RE = re.compile(r"^net:\[(\d+)\]$")
# A folder being removed (renamed away first), by the pid removing it.
_DOOMED_RE = re.compile(r"^_del-(?:netns|net)\d+-(\d+)$")
_libc = ctypes.CDLL(None, use_errno=True)
_GONE = (FileNotFoundError, ProcessLookupError, NotADirectoryError)


@dataclass(frozen=True)
class StaleFolder:
    """The state folder of a namespace that no longer exists."""

    netns: str  # the folder's name: "netns<cookie>" or "net<inode>"
    path: str
    groups: list[str]


class _Incomplete(Exception):
    """A namespace could not be identified: the scan cannot prove any folder stale."""

    def __init__(self, text: str, err: int):
        super().__init__(text)
        self.errno = err


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _pids() -> list[str]:
    return [p for p in os.listdir("/proc") if p.isdigit()]


def _namespace_paths() -> Iterator[str]:
    """Paths that open a live network namespace: of tasks, nsfs mounts and held fds.
    A process whose namespaces this one may not read makes the list incomplete."""
    try:
        yield from _scan_proc()
    except PermissionError as e:
        raise _Incomplete(f"read {e.filename}: permission denied", errno.EACCES) from None


def _scan_proc() -> Iterator[str]:
    mount_namespaces: set[int] = set()
    for pid in _pids():
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except _GONE:
            continue
        for tid in tids:
            yield f"/proc/{pid}/task/{tid}/ns/net"
        # Bind mounts, once per mount namespace, reached through a process in it.
        try:
            mnt = os.stat(f"/proc/{pid}/ns/mnt").st_ino
            if mnt not in mount_namespaces:
                mount_namespaces.add(mnt)
                yield from _nsfs_mounts(pid)
        except _GONE:
            pass
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except _GONE:
            continue
        for fd in fds:
            try:
                if _NET_LINK_RE.match(os.readlink(f"/proc/{pid}/fd/{fd}")):
                    yield f"/proc/{pid}/fd/{fd}"
            except _GONE:
                continue


def _nsfs_mounts(pid: str) -> Iterator[str]:
    with open(f"/proc/{pid}/mountinfo") as f:
        lines = f.read().splitlines()
    for line in lines:
        fields = line.split()
        # ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
        try:
            fstype = fields[fields.index("-") + 1]
        except (ValueError, IndexError):
            continue
        if fstype == "nsfs" and _NET_LINK_RE.match(fields[3]):
            yield f"/proc/{pid}/root{_unescape(fields[4])}"


def _cookie_name(fd: int) -> str:
    """netns_id() of the namespace `fd` opens, read from a thread that enters it
    (setns moves only the calling thread; this one ends with the read)."""
    out: list = []

    def enter() -> None:
        try:
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns")
            out.append(netns_id())
        except OSError as e:
            out.append(e)

    t = threading.Thread(target=enter, name="rpctl-netns-id")
    t.start()
    t.join()
    if isinstance(out[0], OSError):
        raise out[0]
    return out[0]


def live_netns_ids() -> set[str]:
    """The folder names ("netns<cookie>" and "net<inode>") of every network
    namespace found alive.  Raises _Incomplete when one was found but could
    not be named."""
    seen: set[tuple[int, int]] = set()
    names = {netns_id()}
    for path in _namespace_paths():
        try:
            st = os.stat(path)
            if (st.st_dev, st.st_ino) in seen:
                continue  # a namespace already named: most tasks share a few
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except _GONE:
            continue  # the task, mount or fd went away since it was listed
        except OSError as e:
            raise _Incomplete(f"open {path}: {e.strerror}", e.errno) from None
        try:
            seen.add((st.st_dev, st.st_ino))
            names.add(f"net{st.st_ino}")
            try:
                names.add(_cookie_name(fd))
            except OSError as e:
                raise _Incomplete(f"enter the network namespace of {path}: {os.strerror(e.errno)}", e.errno) from None
        finally:
            os.close(fd)
    return names


def _holds_a_socket(group_dir: str) -> bool:
    """Whether a group's socket array still has a socket (unreadable: assume it does)."""
    try:
        socks = Map.open_pinned(os.path.join(group_dir, "socks"), abi.MAP_SPECS["socks"])
    except FileNotFoundError:
        return False  # an incomplete folder: nothing to steer
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
    root = root if root is not None else state.bpffs_root(mount=False)
    folders = _folders(root)  # before the scan: see the module's docstring
    if not folders:
        return []
    try:
        live = live_netns_ids()
    except _Incomplete as e:
        if e.errno in (errno.EPERM, errno.EACCES):
            raise PermissionDenied(f"tell which state folders are stale: {e} (run as root)") from None
        log.info("no state folder is called stale: %s", e)
        return []
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
    root = root if root is not None else state.bpffs_root(mount=False)
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
        removed.append(folder)
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
