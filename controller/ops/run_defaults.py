"""What `rpctl run` does when not told, and how many children it may start.

One place for each: the launcher and its supervisor run with these, a file's
`run` groups default to them (controller/ops/config.py), and the command
line names them in `rpctl run`'s help.  Every rpctl command builds that
help, so this module imports only what the command line has loaded anyway
(the ABI for the member limit, the socket module for the listen address),
never the launcher.
"""

from __future__ import annotations

from ..contract import abi
from ..kernel import sockets

__all__ = [
    "BACKOFF_INITIAL",
    "BACKOFF_MAX",
    "DEFAULT_LISTEN",
    "LISTEN_BACKLOG",
    "MAX_COUNT",
    "RUN_NAMES",
    "STABLE_AFTER",
    "STOP_TIMEOUT",
]

MAX_COUNT = abi.RP_MAX_MEMBERS          # children of one launcher: each is a member of one group
RUN_NAMES = "worker-{i}"                # the member names, {i} being 1..count
DEFAULT_LISTEN = sockets.DEFAULT_LISTEN  # HOST:PORT of the children's sockets
LISTEN_BACKLOG = sockets.LISTEN_BACKLOG  # accept queue of each child's TCP socket
BACKOFF_INITIAL = 0.5                   # seconds before the first restart of a child that died
BACKOFF_MAX = 10.0                      # the longest wait between restarts (the wait doubles up to it)
STABLE_AFTER = 10.0                     # a child that lived this long resets its restart backoff
STOP_TIMEOUT = 5.0                      # SIGTERM, then SIGKILL after this long
