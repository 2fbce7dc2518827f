"""The one text renderer: a result describes itself as a :class:`Document`, :func:`render` draws it.

Every result type (audit report, inspection, rewrite and prune reports) has ``to_dict()``
(its JSON) and ``document()`` (its title, tables and remarks, and the rows of its CSV).
Drawing a document as table, markdown or CSV is written here once, so the formats agree
cell by cell: the table and markdown grids show the same cells, a markdown title is bold
and followed by a blank line, remarks become a bulleted list, and every CSV cell goes
through :func:`actaudit.sanitize.csv_cell`. ``render()`` returns a string; only the CLI prints.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ..sanitize import csv_cell, text

if TYPE_CHECKING:
    from ..gates import GateResult

FORMATS = ("table", "json", "csv", "markdown")


@dataclass
class Table:
    """A grid: ``headers`` and ``rows`` of cells; ``empty`` is shown instead when there are no rows."""

    headers: Sequence[str]
    rows: list[list[Any]]
    empty: str | None = None


@dataclass
class Lines:
    """Remarks under a table: plain lines in a table, a bulleted list in markdown (none: nothing)."""

    items: list[str] = field(default_factory=list)


Block = Table | Lines | str  # a str is one line of text ("" a blank line)


@dataclass
class Document:
    """What a result shows: a title, then blocks in order; ``csv`` is the CSV's grid (default: the first table)."""

    title: str
    body: list[Block]
    csv: Table | None = None

    def csv_table(self) -> Table:
        if self.csv is not None:
            return self.csv
        return next(b for b in self.body if isinstance(b, Table))


class Result(Protocol):
    def to_dict(self) -> dict[str, object]: ...

    def document(self) -> Document: ...


def to_json(data: Mapping[str, object]) -> str:
    """The JSON form every result writes: two-space indent, no NaN, a final newline."""
    return json.dumps(data, indent=2, allow_nan=False) + "\n"


def render(result: Result, fmt: str) -> str:
    """``result`` as ``fmt`` (one of :data:`FORMATS`)."""
    if fmt == "json":
        return to_json(result.to_dict())
    if fmt == "csv":
        return csv_text(result.document().csv_table())
    if fmt in ("table", "markdown"):
        return text_form(result.document(), markdown=fmt == "markdown")
    raise ValueError(f"unknown format {fmt!r}")


def grid(table: Table, markdown: bool) -> str:
    """tabulate's ``simple`` grid (``github`` for markdown); cells are shown as given, never re-parsed."""
    from tabulate import tabulate

    if not table.rows and table.empty is not None:
        return table.empty
    return tabulate(
        table.rows,
        headers=list(table.headers),
        tablefmt="github" if markdown else "simple",
        disable_numparse=True,
    )


def text_form(doc: Document, markdown: bool) -> str:
    """The table or markdown form; the title and remarks are escaped (names come from the file)."""
    title = text(doc.title)
    out = [f"**{title}**\n" if markdown else title]
    for block in doc.body:
        if isinstance(block, Table):
            out.append(grid(block, markdown))
        elif isinstance(block, Lines):
            if block.items:
                out.append("\n".join(("- " if markdown else "") + text(x) for x in block.items))
        else:
            out.append(text(block))
    return "\n".join(out) + "\n"


NO_VALUE = "-"  # what a table cell shows for "does not apply"; alone it is no formula, so CSV keeps it


def csv_text(table: Table) -> str:
    """The CSV: every cell neutralised (no formulas, no control characters), except the bare ``-``."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    for row in [list(table.headers), *table.rows]:
        w.writerow([c if c == NO_VALUE else csv_cell(c) for c in row])
    return buf.getvalue()


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def plain(s: str) -> str:
    """``s`` without ANSI colour codes: what takes room on a terminal."""
    return _ANSI.sub("", s)


def layout(headers: Sequence[str], rows: Sequence[Sequence[object]], sep: str, right: set[int]) -> list[str]:
    """A compact grid (tabulate's "simple" look without its header padding): ``right`` columns right-aligned."""
    cells = [[str(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(plain(r[j])) for r in cells]) for j, h in enumerate(headers)]

    def line(r: Sequence[str]) -> str:
        out = []
        for j, c in enumerate(r):
            pad = " " * (widths[j] - len(plain(c)))
            out.append(pad + c if j in right else c + pad)
        return sep.join(out).rstrip()

    return [line(headers), sep.join("-" * w for w in widths), *(line(r) for r in cells)]


def pct(x: float | None, digits: int = 1, none: str = "-") -> str:
    """``0.125`` → ``12.5%``; ``None`` → ``none``."""
    return none if x is None else f"{100 * x:.{digits}f}%"


def capped(items: Sequence[object], limit: int, sep: str = ", ") -> str:
    """The first ``limit`` items joined, with ``… (N in all)`` when there are more."""
    more = f" … ({len(items)} in all)" if len(items) > limit else ""
    return sep.join(map(str, items[:limit])) + more


def gate_line(g: GateResult) -> str:
    """``gate dead>0: FAILED (value 3) at a, b``: one gate result, as the audit and the comparison print it."""
    status = "FAILED" if g.failed else "passed"
    where = f" at {', '.join(g.failing_sites[:5])}" if g.failing_sites else ""
    return f"gate {g.gate.text}: {status} (value {g.value:g}){where}"
