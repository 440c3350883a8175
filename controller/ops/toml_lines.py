"""Where a key of a TOML file of groups is, by line: tomllib gives values without positions.

The `[[group]]` headers split the text into ranges, and a key's line is the
first `key =` (or `[group.key]`) inside its group's range; a key outside
every group is looked for before the first header or as a table of its own.
"""

from __future__ import annotations

import re

__all__ = ["Lines"]

_HEADER_RE = re.compile(r"^\s*\[\[\s*group\s*\]\]")
_TABLE_RE = re.compile(r"^\s*\[")


class Lines:
    """Where things are in the text: the [[group]] headers and the keys inside them."""

    def __init__(self, text: str):
        self.lines = text.splitlines()
        self.headers = [n for n, line in enumerate(self.lines, 1) if _HEADER_RE.match(line)]

    def group(self, k: int) -> int:
        return self.headers[k] if k < len(self.headers) else 1

    def key(self, k: int, key: str, subkey: str = "") -> int:
        """The line of `key` (or of `key`'s `subkey`) in group k; its header's line when not found."""
        if k < len(self.headers):
            start = self.headers[k]
            end = self.headers[k + 1] - 1 if k + 1 < len(self.headers) else len(self.lines)
        else:
            start, end = 1, len(self.lines)
        return self._find(start, end, key, subkey) or (start if k < len(self.headers) else 1)

    def top(self, key: str) -> int:
        """The line of a key outside every [[group]] (before the first, or in a table of its own)."""
        end = self.headers[0] - 1 if self.headers else len(self.lines)
        for n in range(1, len(self.lines) + 1):
            line = self.lines[n - 1]
            if (n <= end and _key_re(key).match(line)) or re.match(rf"^\s*\[+\s*\"?{re.escape(key)}\"?\s*[\].]", line):
                return n
        return 1

    def _find(self, start: int, end: int, key: str, subkey: str) -> int:
        key_line = 0
        for n in range(start, end + 1):
            line = self.lines[n - 1]
            if not key_line and (_key_re(key).match(line) or re.match(
                    rf"^\s*\[\s*group\s*\.\s*\"?{re.escape(key)}\"?\s*\]", line)):
                key_line = n
                if not subkey:
                    return n
            if key_line and subkey:
                if re.search(rf"(^|[{{,\s])\"?{re.escape(subkey)}\"?\s*=", line):
                    return n
                if n > key_line and _TABLE_RE.match(line):
                    break
        return key_line


def _key_re(key: str) -> re.Pattern:
    return re.compile(rf"^\s*(\"{re.escape(key)}\"|'{re.escape(key)}'|{re.escape(key)})\s*[=.]")
