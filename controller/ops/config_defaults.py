"""Where the file of groups is when not told: named without reading one.

The file's own path (the command line's -c/--config default).  A `run`
group's defaults are those of `rpctl run`, in controller/ops/run_defaults.py.
This module imports nothing, so that building the command line's parser may
name DEFAULT_PATH.
"""

from __future__ import annotations

__all__ = ["DEFAULT_PATH"]

DEFAULT_PATH = "/etc/rpctl/rpctl.toml"
