"""Results and their renderings: the audit report, the inspection, the rewrite and prune reports,
the baseline comparison, the JSON schema and the HTML page.

Every result type describes itself as a :class:`~actaudit.report.draw.Document`;
:func:`~actaudit.report.draw.render` draws a document as table, markdown, CSV or JSON.
The names below load on first use, so that the CLI can read :data:`FORMATS` (from
:mod:`actaudit.report.draw`) without importing numpy on a ``--help`` path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .draw import FORMATS

if TYPE_CHECKING:
    from .audit import SCHEMA, Report, rows_for_csv

__all__ = ["FORMATS", "SCHEMA", "Report", "rows_for_csv"]


def __getattr__(name: str) -> Any:
    if name in ("SCHEMA", "Report", "rows_for_csv"):
        from . import audit

        return getattr(audit, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
