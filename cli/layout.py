"""Tables as lines of text: column widths from the cells, one rich Text per line.

The member tables of `status`, `weights` and the dashboard are laid out
here rather than by rich's Table, which measures every cell several times:
at 256 members a Table took about 60 ms to print, these lines a few.
Cells are strings or Text (for a styled state); nothing wraps: a line
longer than the terminal is cut with an ellipsis, and a table wider than
the terminal gives up width from one column chosen by the caller.
"""

from __future__ import annotations

from typing import Any, Container, Mapping, Optional, Sequence, TypeVar

from rich.cells import cell_len
from rich.text import Text

GAP = 2  # spaces between columns, none at the edges
K = TypeVar("K")  # what names a column: its index, or its key in a row's dict
Row = Any  # a row's cells: a list indexed by column position, or a dict by column key


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


def column_widths(headers: Mapping[K, str], rows: Sequence[Row]) -> dict[K, int]:
    """The widest cell of each column, its header included."""
    return {c: max([len(h)] + [width_of(r[c]) for r in rows]) for c, h in headers.items()}


def fit(widths: dict[K, int], columns: Sequence[K], width: int, shrink: K) -> None:
    """Make `columns` fit `width`: column `shrink` gives up the excess (never below one cell)."""
    overflow = sum(widths[c] for c in columns) + GAP * (len(columns) - 1) - width
    if overflow > 0:
        widths[shrink] = max(1, widths[shrink] - overflow)


def lines(columns: Sequence[K], headers: Mapping[K, str], rows: Sequence[Row],
          widths: Mapping[K, int], right: Container[K]) -> list[Text]:
    """A bold header line and one line per row, of `columns` in that order."""
    out = [line([(Text(headers[c], style="bold"), widths[c], c in right) for c in columns])]
    out += [line([(r[c], widths[c], c in right) for c in columns]) for r in rows]
    return out


def table_lines(headers: Sequence[str], rows: Sequence[Row], right: Sequence[bool],
                width: Optional[int] = None, shrink: int = 0) -> list[Text]:
    """A bold header line and one line per row.  When the columns need more
    than `width`, column `shrink` (default: the first) gives up the excess."""
    columns = range(len(headers))
    heads = dict(enumerate(headers))
    widths = column_widths(heads, rows)
    if width:
        fit(widths, columns, width, shrink)
    return lines(columns, heads, rows, widths, {c for c in columns if right[c]})
