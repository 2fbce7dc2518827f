"""The rewrite report lives in :mod:`actaudit.report.rewrite`; re-exported for the rewrite stage."""

from ..report.rewrite import NO_DEAD, NO_DEAD_MODEL, REFERENCE_SLOPES, SCHEMA, RewriteReport, SiteRewrite

__all__ = ["NO_DEAD", "NO_DEAD_MODEL", "REFERENCE_SLOPES", "SCHEMA", "RewriteReport", "SiteRewrite"]
