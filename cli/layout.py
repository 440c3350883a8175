"""Tables as lines of text: column widths from the cells, one rich Text per line.

The member tables of `status`, `weights` and the dashboard are laid out
here rather than by rich's Table, which measures every cell several times:
at 256 members a Table took about 60 ms to print, these lines a few.
Cells are strings or Text (for a styled state); nothing wraps: a line
longer than the terminal is cut with an ellipsis, and a table wider than
the terminal gives up width from one column chosen by the caller.
"""

from __future__ import annotations

from typing import Optional, Sequence

from rich.cells import cell_len
from rich.text import Text

GAP = 2  # spaces between columns, none at the edges


def width_of(value: object) -> int:
    return cell_len(value.plain if isinstance(value, Text) else str(value))


def line(cells: Sequence[tuple[object, int, bool]]) -> Text:
    """One table line from (value, width, right-justified) cells."""
    out = Text(no_wrap=True, overflow="ellipsis")
    for i, (value, w, right) in enumerate(cells):
        t = value.copy() if isinstance(value, Text) else Text(str(value))
        if cell_len(t.plain) > w:
            t.truncate(w, overflow="ellipsis")
        pad = " " * (w - cell_len(t.plain))
        if i:
            out.append(" " * GAP)
        if right:
            out.append(pad)
        out.append_text(t)
        if not right:
            out.append(pad)
    out.rstrip()
    return out


def table_lines(headers: Sequence[str], rows: Sequence[Sequence[object]], right: Sequence[bool],
                width: Optional[int] = None, shrink: int = 0) -> list[Text]:
    """A bold header line and one line per row.  When the columns need more
    than `width`, column `shrink` (default: the first) gives up the excess."""
    widths = [max([len(h)] + [width_of(r[c]) for r in rows]) for c, h in enumerate(headers)]
    overflow = sum(widths) + GAP * (len(widths) - 1) - width if width else 0
    if overflow > 0:
        widths[shrink] = max(1, widths[shrink] - overflow)
    out = [line([(Text(h, style="bold"), w, r) for h, w, r in zip(headers, widths, right)])]
    out += [line(list(zip(row, widths, right))) for row in rows]
    return out
