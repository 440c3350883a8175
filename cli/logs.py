"""The library's log on stderr: the handler the command line puts on the "rpctl" logger.

The library logs through logging.getLogger("rpctl.<module>") and installs
no handler.  A command that wants its progress shown runs inside
library_log(env, prefix): every record at INFO and above becomes one line
`<prefix>: <message>` on the Environment's stderr (`rpctl: failpoint
before-flip reached`, `rpctl run: started worker-1 (pid 4242)`).  An rpctl
error among a record's arguments is worded as the command line words errors
(`rpctl unload --group web`, not the library's `unload(group=web)`), so a
long-running command's log reads like its one-line errors.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Iterator

from rpctl.controller.contract.errors import RpctlError

from .wording import error_text

__all__ = ["LIBRARY_LOGGER", "StderrHandler", "library_log", "message"]

LIBRARY_LOGGER = "rpctl"


class StderrHandler(logging.Handler):
    """One line per record on env's stderr.  A stderr that went away (`rpctl demo | head`)
    must not stop what is being logged (a launcher's shutdown): write errors are dropped."""

    def __init__(self, env, prefix: str = "rpctl", level: int = logging.INFO):
        super().__init__(level)
        self.env = env
        self.prefix = prefix

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.env.err(f"{self.prefix}: {message(record)}")
        except OSError:
            pass
        except Exception:
            self.handleError(record)


def message(record: logging.LogRecord) -> str:
    """The record's message, its rpctl errors worded for the command line."""
    args = record.args
    if isinstance(args, tuple) and any(isinstance(a, RpctlError) for a in args):
        return str(record.msg) % tuple(error_text(a) if isinstance(a, RpctlError) else a for a in args)
    return record.getMessage()


@contextmanager
def library_log(env, prefix: str = "rpctl", level: int = logging.INFO) -> Iterator[StderrHandler]:
    """Show the library's records of `level` and above on env's stderr while inside."""
    logger = logging.getLogger(LIBRARY_LOGGER)
    handler = StderrHandler(env, prefix, level)
    saved = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False  # shown once, here, whatever the root logger has
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
