"""The defaults of a file of groups that are named without reading one.

The file's own path (the command line's -c/--config default) and a `run`
group's defaults, which are those of `rpctl run` (its launcher's member
names and restart backoff).  One place for each; this module imports
nothing, so that building the command line's parser may name DEFAULT_PATH.
"""

from __future__ import annotations

__all__ = ["BACKOFF_INITIAL", "BACKOFF_MAX", "DEFAULT_PATH", "RUN_NAMES"]

DEFAULT_PATH = "/etc/rpctl/rpctl.toml"
RUN_NAMES = "worker-{i}"  # the default member names of a `run` group, as `rpctl run` names them
BACKOFF_INITIAL = 0.5     # seconds before the first restart of a child that died
BACKOFF_MAX = 10.0        # the longest wait between restarts
