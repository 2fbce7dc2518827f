"""What a command that writes a model (rewrite, prune) reports besides its sites.

The model it started from, the calibration data and options it ran with, the drift of its
outputs (in memory and re-measured on the written file), where the model went, and its
messages. :class:`~actaudit.report.rewrite.RewriteReport` and
:class:`~actaudit.report.prune.PruneReport` add their sites and their own measurements.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass, field

from ..edit.drift import Drift


@dataclass
class ModelChange:
    model: dict[str, object]
    calibration: dict[str, object]
    options: dict[str, object]
    _: KW_ONLY
    drift: Drift | None = None  # measured in memory on the calibration data
    drift_verified: Drift | None = None  # re-measured on the written file, reloaded
    output: dict[str, object] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    run: dict[str, object] = field(default_factory=dict)
    model_out: object = None  # the new model (in memory), for the Python API

    @property
    def final_drift(self) -> Drift | None:
        """The last drift measured: the written file's when it was verified."""
        return self.drift_verified or self.drift
