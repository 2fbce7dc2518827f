"""The rewrite report lives in :mod:`actaudit.report.rewrite`; re-exported for the rewrite stage."""

from ..report.rewrite import REFERENCE_SLOPES, SCHEMA, RewriteReport, SiteRewrite

__all__ = ["REFERENCE_SLOPES", "SCHEMA", "RewriteReport", "SiteRewrite"]
