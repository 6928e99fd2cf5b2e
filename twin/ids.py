"""The one rule for text that names a row id (a path segment, a query value, a command argument).

An id is a bigint written in ASCII digits. `str.isdigit()` alone is not that test: it also accepts "¹", "٣" and "②", which
`int()` then refuses (a 500 found by the schema fuzz), and it admits numbers no bigint column holds.
"""

from __future__ import annotations

MAX_ID = 2**63 - 1  # ids are bigints


def parse_id(text: object) -> int | None:
    """The id `text` names (1 … MAX_ID in ASCII digits), else None; never raises."""
    text = str(text)
    if not (text.isascii() and text.isdigit()) or len(text) > len(str(MAX_ID)):
        return None
    value = int(text)
    return value if 1 <= value <= MAX_ID else None
