"""References, inside an error's message, to the library's own parameters and operations.

An RpctlError's arguments are the parts of its one-line message: text, and
references to what the caller could pass (Param) or call (Call) to get on:

    UsageError("several groups here (a, b): say which with ", Param("group"))
    StateError("group 'web': its pinned state is incomplete; run ", Call("unload", group="web"))

str(error) words each reference in the library's terms (library_word): a
parameter by its keyword (`group`, `replace=True`), an operation as a call
(`unload(group=web)`).  The command line words the same parts with its
flags and commands instead (rpctl.cli.wording: `--group`,
`rpctl unload --group web`).  So the library never spells a flag, and the
command line never parses a message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Union

__all__ = ["Call", "Param", "Ref", "library_word", "render", "shown"]


@dataclass(frozen=True)
class Param:
    """Parameter `name` of library operation `op` (a function or class of
    rpctl.controller; "" when every operation that takes it names it so)."""

    name: str
    op: str = ""
    flag: bool = False  # a switch: passing it means passing True


class Call:
    """Library operation `op` called with these arguments: what a message suggests doing."""

    __slots__ = ("op", "args", "kwargs")

    def __init__(self, op: str, *args: Any, **kwargs: Any):
        self.op = op
        self.args = args
        self.kwargs = kwargs

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Call) and (self.op, self.args, self.kwargs) == (other.op, other.args, other.kwargs)

    def __hash__(self) -> int:
        return hash((self.op, self.args, tuple(self.kwargs.items())))

    def __repr__(self) -> str:
        args = [repr(self.op)] + [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"Call({', '.join(args)})"


Ref = Union[Param, Call]

# Parameters whose keyword alone would not read in a sentence.
_LIBRARY_PARAMS = {
    ("Launcher", "argv"): "in argv",
    ("RestartOptions", "command"): "as RestartOptions.command",
    ("RestartOptions", "hook"): "RestartOptions.hook=True",
}


def _call_text(call: Call) -> str:
    args = [_call_text(a) if isinstance(a, Call) else str(a) for a in call.args]
    args += [f"{k}={_call_text(v) if isinstance(v, Call) else v}" for k, v in call.kwargs.items()]
    return f"{call.op}({', '.join(args)})"


def library_word(ref: Ref) -> str:
    """How the library (str(error)) words a reference."""
    if isinstance(ref, Param):
        return _LIBRARY_PARAMS.get((ref.op, ref.name)) or (f"{ref.name}=True" if ref.flag else ref.name)
    return f"`{_call_text(ref)}`"


def render(parts: Iterable[object], word: Callable[[Ref], str] = library_word) -> str:
    """One message from its parts, each reference worded by `word`."""
    return "".join(word(p) if isinstance(p, (Param, Call)) else str(p) for p in parts)


def shown(name: str) -> str:
    """A name as a message of one line shows it: as it is, or quoted with Python's escapes
    when it holds what a line cannot show (a newline, a control character)."""
    return name if name.isprintable() else repr(name)
