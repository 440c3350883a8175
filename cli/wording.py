"""How the command line words an error: one line and an exit code.

The library's errors name its own parameters and operations as references
(rpctl.controller.contract.refs: Param, Call) among the text of their message; here
one table words each as the command line spells it: the parameter `group`
as `--group`, the call `unload(group=web)` as `rpctl unload --group web`.
A reference not in the table keeps the library's wording.

run() calls error_line() for every exception a handler lets out, and writes
`rpctl: <line>` on stderr.  This module imports nothing heavy: every command
pays for it.
"""

from __future__ import annotations

import errno
from typing import Any, Callable, Mapping, Union

from rpctl.controller.contract.errors import ExitStatus, PermissionDenied, RpctlError
from rpctl.controller.contract.refs import Call, Param, Ref, library_word, render

__all__ = ["COMMANDS", "FLAGS", "cli_word", "error_line", "error_text"]


def _opt(flag: str, value: Any) -> str:
    return "" if value is None else f" {flag} {value}"


def _device(info: Any) -> Any:
    """explain_rss's argument, Call("read_device", DEV): the device's name."""
    return info.args[0] if isinstance(info, Call) and info.args else info


# The one table: library parameter -> command-line flag, by (operation, parameter)
# where two commands spell one keyword differently, else by parameter alone;
# library operation -> the command line that does it.
FLAGS: Mapping[Union[str, tuple[str, str]], str] = {
    ("Launcher", "count"): "-n",
    ("Launcher", "name_format"): "--name",
    ("Launcher", "argv"): "after --",
    ("RestartOptions", "command"): "after --",
    ("RestartOptions", "hook"): "--hook",
    ("read_fleet", "url"): "--prometheus",
    ("read_fleet", "match"): "--match",
    ("read_fleet", "window"): "--window",
    "addr": "--addr",
    "balance": "--balance",
    "batch": "--batch",
    "dev": "--dev",
    "flow_affinity": "--flow-affinity",
    "flow_idle_timeout": "--flow-idle-timeout",
    "flow_table_size": "--flow-table-size",
    "force": "--force",
    "group": "--group",
    "listen": "--listen",
    "mapping": "--map",
    "name_format": "--name-format",
    "proto": "--proto",
    "quic": "--quic",
    "quic_server_id": "--quic-server-id",
    "quic_server_id_length": "--quic-server-id-length",
    "replace": "--replace",
}

COMMANDS: Mapping[str, Callable[..., str]] = {
    "register": lambda name, pid=None, fd=None, replace=False: (
        f"rpctl register {name}{_opt('--pid', pid)}{_opt('--fd', fd)}{' --replace' if replace else ''}"
    ),
    "unload": lambda group=None, *, force=False: f"rpctl unload{_opt('--group', group)}{' --force' if force else ''}",
    "set_draining": lambda name, draining=True: f"rpctl {'drain' if draining else 'undrain'} {name}",
    "pin_cpu": lambda: "rpctl pin cpu",
    "explain_rss": lambda info: f"rpctl pin rss --dev {_device(info)} --explain",
}


def cli_word(ref: Ref) -> str:
    """How the command line words a reference (the library's wording when the table has none)."""
    if isinstance(ref, Param):
        flag = FLAGS.get((ref.op, ref.name)) or FLAGS.get(ref.name)
        return flag if flag is not None else library_word(ref)
    command = COMMANDS.get(ref.op)
    if command is None:
        return library_word(ref)
    try:
        return f"`{command(*ref.args, **ref.kwargs)}`"
    except TypeError:  # arguments the table does not know: say it as the library does
        return library_word(ref)


def error_text(e: RpctlError) -> str:
    """An rpctl error's message as the command line words it."""
    return render(e.args, cli_word)


def error_line(e: BaseException) -> tuple[str, ExitStatus]:
    """Any exception -> its one line (without the `rpctl: ` run() puts in front) and exit code."""
    if isinstance(e, RpctlError):
        text, status = error_text(e), e.exit_status
    elif isinstance(e, OSError) and e.errno in (errno.EPERM, errno.EACCES):
        text = error_text(PermissionDenied(f"{e.strerror}: {e.filename or ''} (run as root)".strip()))
        status = ExitStatus.PERMISSION
    else:
        text, status = f"unexpected error: {type(e).__name__}: {e}", ExitStatus.ERROR
    return " ".join(text.splitlines()), status
