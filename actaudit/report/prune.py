"""The prune report: per site what was cut, folded or kept (and why), sizes before and after, drift.

``PruneReport.to_dict()`` is the schema ``actaudit.prune/1``. ``render()`` returns a string;
only the CLI prints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import cast

from ..edit.drift import Drift
from ..jsonform import dicts, envelope, picked
from ..sanitize import text
from .change import ModelChange
from .draw import Document, Lines, Table
from .draw import render as draw_render

SCHEMA = "actaudit.prune/1"


@dataclass
class SiteRow:
    name: str
    op: str
    kind: str
    units: int
    removed: list[int] = field(default_factory=list)
    folded: list[int] = field(default_factory=list)
    kept: dict[int, str] = field(default_factory=dict)
    approximate: list[int] = field(default_factory=list)
    producer: str | None = None
    consumers: list[str] = field(default_factory=list)
    proven: list[int] | None = None  # proven dead for every input in the box (with --input-range)
    # the three tiers of evidence: the weights alone, the box (interval bounds; `proven` adds linear
    # relaxations), the calibration data
    weights_dead: list[int] | None = None
    proven_interval: list[int] | None = None
    data_dead: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        d: dict[str, object] = {
            **picked(self, "name", "op", "kind", "units"),
            "removed_units": list(self.removed),
            "folded_units": list(self.folded),
            "approximate_units": list(self.approximate),
            "kept_units": [{"unit": u, "reason": r} for u, r in sorted(self.kept.items())],
            "producer": self.producer,
            "consumers": list(self.consumers),
        }
        d["data_dead_units"] = list(self.data_dead)
        if self.proven is not None:
            d["proven_dead_units"] = list(self.proven)
        if self.proven_interval is not None:
            d["proven_dead_units_interval"] = list(self.proven_interval)
        if self.weights_dead is not None:
            d["dead_by_weights_units"] = list(self.weights_dead)
        return d


def _pct(a: int, b: int) -> str:
    return f"{100 * (b - a) / b:.1f}%" if b else "-"


@dataclass
class PruneReport(ModelChange):
    sites: list[SiteRow]
    before: dict[str, int]  # parameters and multiply-adds per sample
    after: dict[str, int]
    drift_fresh: Drift | None = None  # on a fresh seeded batch, not the calibration data
    fresh: dict[str, object] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        d = self.final_drift
        return d is None or d.rel_l2 <= float(cast(float, self.options["max_drift"]))

    def summary(self) -> dict[str, object]:
        return {
            "units_removed": sum(len(s.removed) for s in self.sites),
            "units_folded": sum(len(s.folded) for s in self.sites),
            "units_kept": sum(len(s.kept) for s in self.sites),
            "parameters_before": self.before["parameters"],
            "parameters_after": self.after["parameters"],
            "parameters_removed": self.before["parameters"] - self.after["parameters"],
            "macs_before": self.before["macs"],
            "macs_after": self.after["macs"],
            "macs_removed": self.before["macs"] - self.after["macs"],
            **self._tier_totals(),
            **dicts(self, "drift", "drift_fresh", "drift_verified"),
            "passed": self.passed,
        }

    def _tier_totals(self) -> dict[str, object]:
        """Units per tier of evidence (with --input-range): weights alone, box by intervals and by
        linear relaxations, calibration data."""
        if not any(s.proven is not None for s in self.sites):
            return {}
        total = lambda key: sum(len(getattr(s, key) or []) for s in self.sites)  # noqa: E731
        return {
            "dead_units_by_evidence": {
                "weights": total("weights_dead"),
                "box_interval": total("proven_interval"),
                "box_linear": total("proven"),
                "data": total("data_dead"),
            }
        }

    def to_dict(self) -> dict[str, object]:
        return {
            **envelope(SCHEMA),
            **picked(self, "model", "calibration", "fresh", "options"),
            "summary": self.summary(),
            "sites": [s.to_dict() for s in self.sites],
            **picked(self, "output", "notes", "warnings", "run"),
        }

    def document(self) -> Document:
        """Per site what was removed, folded and kept (and why), then sizes, drifts and the gate."""
        m, c = self.model, self.calibration
        title = (
            f"{m.get('path') or 'in-memory model'} [{m.get('format')}] — prune on "
            f"{c.get('samples')} samples from {c.get('source')}"
        )
        return Document(title, [self._table(), "", Lines(self._remarks())])

    def render(self, fmt: str = "table") -> str:
        return draw_render(self, fmt)

    def _table(self) -> Table:
        proven = any(s.proven is not None for s in self.sites)
        headers = ["site", "kind", "units", "removed", "folded", "kept"]
        rows = []
        for s in self.sites:
            reasons = sorted(set(s.kept.values()))
            row: list[object] = [text(s.name), s.kind, s.units, len(s.removed), len(s.folded), len(s.kept)]
            if proven:
                row += [_n(s.weights_dead), _n(s.proven_interval), _n(s.proven), len(s.data_dead)]
            row.append("; ".join(reasons)[:120] if reasons else "")
            rows.append(row)
        tiers = ["dead by weights", "proven (interval)", "proven (linear)", "dead on data"]
        return Table([*headers, *(tiers if proven else []), "why kept"], rows)

    def _remarks(self) -> list[str]:
        s = self.summary()
        lines = [
            f"units: {s['units_removed']} removed, {s['units_folded']} folded into biases, {s['units_kept']} kept",
            f"parameters: {s['parameters_before']:,} -> {s['parameters_after']:,} "
            f"(-{_pct(cast(int, s['parameters_after']), cast(int, s['parameters_before']))}); multiply-adds per sample: "
            f"{s['macs_before']:,} -> {s['macs_after']:,} (-{_pct(cast(int, s['macs_after']), cast(int, s['macs_before']))})",
        ]
        for label, d in (
            ("calibration", self.drift),
            ("fresh seeded batch", self.drift_fresh),
            ("written file", self.drift_verified),
        ):
            if d is not None:
                lines.append(
                    f"drift on {label} ({d.samples} samples): relative {_g(d.rel_l2)}, max abs {_g(d.max_abs)}"
                )
        lines.append(
            f"gate --max-drift {self.options['max_drift']:g}: {'passed' if self.passed else 'FAILED'}"
        )
        return lines + [f"note: {n}" for n in self.notes]


def _n(units: list[int] | None) -> str | int:
    return "-" if units is None else len(units)


def _g(x: float) -> str:
    return "inf" if not math.isfinite(x) else f"{x:.3g}"
