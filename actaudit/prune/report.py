"""The prune report lives in :mod:`actaudit.report.prune`; re-exported for the prune stage."""

from ..report.prune import SCHEMA, PruneReport, SiteRow

__all__ = ["SCHEMA", "PruneReport", "SiteRow"]
