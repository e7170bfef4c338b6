"""Rows that show themselves: the console's tables and reports, pure presentation.

Helpers return their data and show it as text: a :class:`Table` is a list of
row dicts and a :class:`Report` a dict, each with a ``repr`` that is the
rendered text, so typing ``buffers()`` at the prompt shows the table and
``buffers()[0]["id"]`` is scriptable.  :class:`Text` is a message shown without
quotes.  The ``show_*`` functions turn one value into a cell.

No Twisted here, nor anything of the server: only values in, text out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Column:
    """One column of a :class:`Table`: the row key, its header, how to show a value."""

    key: str
    header: str
    show: Callable[[Any], str] | None = None


def show_value(value: Any) -> str:
    """A cell: ``-`` for None, thousands separators for ints, one decimal for floats."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.1f}"
    return str(value)


def show_duration(seconds: float | None) -> str:
    """``H:MM:SS``, or ``-``."""
    if seconds is None:
        return "-"
    whole = int(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def show_size(count: int) -> str:
    """A byte count for people: ``1.9 MiB``."""
    size = float(count)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:,.0f} {unit}" if unit == "bytes" else f"{size:,.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def plural(count: int, noun: str) -> str:
    """``1 viewer``, ``2 viewers``, ``1,024 frames``."""
    return f"{count:,} {noun}" + ("" if count == 1 else "s")


def show_bytes(count: int) -> str:
    """``1,974,272 bytes (1.9 MiB)``: exact, and for people when over 1 KiB."""
    exact = f"{count:,} bytes"
    return exact if count < 1024 else f"{exact} ({show_size(count)})"


def render_table(columns: Sequence[Column], rows: Iterable[dict[str, Any]]) -> list[str]:
    """Aligned lines: a header, then one line per row; numbers align right."""
    rows = list(rows)
    cells = [[(c.show or show_value)(row.get(c.key)) for c in columns] for row in rows]
    numeric = [
        all(isinstance(row.get(c.key), int | float) or row.get(c.key) is None for row in rows)
        for c in columns
    ]
    widths = [
        max([len(c.header), *(len(line[i]) for line in cells)]) for i, c in enumerate(columns)
    ]

    def line(values: Sequence[str]) -> str:
        parts = [
            value.rjust(widths[i]) if numeric[i] else value.ljust(widths[i])
            for i, value in enumerate(values)
        ]
        return "  ".join(parts).rstrip()

    return [line([c.header for c in columns]), *(line(values) for values in cells)]


class Table(list[dict[str, Any]]):
    """Rows (dicts) that show themselves as an aligned table.

    :ivar columns: the columns shown.
    :ivar title: a line above the table.
    :ivar footer: lines below it (totals).
    """

    def __init__(
        self,
        columns: Sequence[Column],
        rows: Iterable[dict[str, Any]],
        *,
        title: str = "",
        footer: Sequence[str] = (),
        empty: str = "(none)",
    ) -> None:
        super().__init__(rows)
        self.columns = list(columns)
        self.title = title
        self.footer = list(footer)
        self.empty = empty

    def __repr__(self) -> str:
        lines = [self.title] if self.title else []
        lines.extend(render_table(self.columns, self) if self else [self.empty])
        lines.extend(self.footer)
        return "\n".join(lines)

    __str__ = __repr__


class Report(dict[str, Any]):
    """Data (a dict) that shows itself as the text it was rendered to."""

    def __init__(self, data: dict[str, Any], text: str) -> None:
        super().__init__(data)
        self.text = text

    def __repr__(self) -> str:
        return self.text

    __str__ = __repr__


class Text(str):
    """A message shown without quotes at the prompt."""

    __slots__ = ()

    def __repr__(self) -> str:
        return str(self)
