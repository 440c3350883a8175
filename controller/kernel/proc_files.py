"""The text of a file of /proc (or /sys), whatever bytes it holds.

Much of what /proc shows was chosen by some process: its name (comm, and so
the second field of stat and the Name: line of status), its cgroup's path,
the mount points of its namespace.  None of it need be UTF-8, and one
process named b"\\xff" must not end a read of every process: undecodable
bytes become U+FFFD in what is shown to people, and surrogate escapes in a
path, which os functions turn back into the same bytes.
"""

from __future__ import annotations

__all__ = ["read_text"]


def read_text(path: str, paths: bool = False) -> str:
    """The file's text (OSError when it cannot be read); `paths`: it holds paths rpctl opens."""
    with open(path, "rb") as f:
        raw = f.read()
    return raw.decode("utf-8", "surrogateescape" if paths else "replace")
