"""Results and their renderings: the audit report, the inspection, the rewrite and prune reports,
the baseline comparison, the JSON schema and the HTML page.

Every result type describes itself as a :class:`~actaudit.report.draw.Document`;
:func:`~actaudit.report.draw.draw` turns a document into table, markdown, CSV or JSON.
"""

from __future__ import annotations

from .audit import FORMATS, SCHEMA, Report, rows_for_csv

__all__ = ["FORMATS", "SCHEMA", "Report", "rows_for_csv"]
