"""The audit report: plain Python structures, a stable JSON form, and text renderings.

``Report.to_dict()`` is the schema ``actaudit.report/1`` (see README). Everything in
it is deterministic for the same checkpoint, data and flags, except the ``run``
section (timings, host), which is kept apart so that CI can diff the rest.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..gates import GateResult
from ..sanitize import csv_writer
from ..stats import Uncovered
from ..verdicts import Settings, SiteVerdict, upper_bound_95

SCHEMA = "actaudit.report/1"
FORMATS = ("table", "json", "csv", "markdown")


def _r(x: float | None, digits: int = 6) -> float | None:
    """Round for a stable JSON: float sums can differ in the last bits between thread counts."""
    if x is None or not math.isfinite(x):
        return None
    return float(f"{x:.{digits}g}")


@dataclass
class Report:
    model: dict[str, Any]
    calibration: dict[str, Any]
    settings: Settings
    sites: list[SiteVerdict]
    uncovered: list[Uncovered] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # information, not warnings: nothing to fix
    inputs: list[dict[str, Any]] = field(default_factory=list)
    gates: list[GateResult] = field(default_factory=list)
    run: dict[str, Any] = field(default_factory=dict)
    per_unit: bool = False
    baseline: dict[str, Any] | None = None  # set by --against: the comparison with a previous report
    counters: dict[str, Any] | None = None  # set by --shard: exact counters for `actaudit merge`

    @property
    def passed(self) -> bool:
        return not any(g.failed for g in self.gates)

    def summary(self) -> dict[str, Any]:
        die = [v for v in self.sites if v.can_die]
        sat = [v for v in self.sites if v.can_saturate]
        die_units = sum(v.units for v in die)
        sat_units = sum(v.units for v in sat)
        dead = sum(len(v.dead_units) for v in self.sites)
        saturated = sum(len(v.saturated_units) for v in self.sites)
        rare = sum(len(v.rarely_firing_units) for v in self.sites)
        return {
            "sites": len(self.sites),
            "units": sum(v.units for v in self.sites),
            "rectifier_units": die_units,
            "bounded_units": sat_units,
            "dead": dead,
            "dead_fraction": _r(dead / die_units) if die_units else 0.0,
            "saturated": saturated,
            "saturated_fraction": _r(saturated / sat_units) if sat_units else 0.0,
            "rarely_firing": rare,
            "rarely_firing_fraction": _r(rare / die_units) if die_units else 0.0,
            "never_positive": sum(len(v.never_positive_units) for v in self.sites),
            "nonfinite": int(sum(int(v.stats.nonfinite.sum()) for v in self.sites)),
            "uncovered": len(self.uncovered),
        }

    def site_dict(self, index: int, v: SiteVerdict) -> dict[str, Any]:
        info, st = v.info, v.stats
        fr = v.fire_rate[np.isfinite(v.fire_rate)]
        thr_low, thr_high = _thresholds(v, self.settings)
        d: dict[str, Any] = {
            "index": index,
            "name": info.name,
            "op": info.op,
            "kind": info.kind,
            "family": v.family.value,
            "module": info.module,
            "params": {k: _r(float(x)) for k, x in sorted(info.params.items())},
            "unit_axis": info.unit_axis,
            "unit_axis_source": info.unit_axis_source,
            "units": info.units,
            "sample_shape": list(info.sample_shape),
            "thresholds": {"low": _r(thr_low), "high": _r(thr_high)},
            "coverage": {
                "samples": st.samples,
                "elements_per_unit": st.elements,
                "dead_rate_upper_95": _r(upper_bound_95(st.samples)) if v.dead_units else None,
            },
            "dead": len(v.dead_units),
            "saturated": len(v.saturated_units),
            "rarely_firing": len(v.rarely_firing_units),
            "never_positive": len(v.never_positive_units),
            "dead_fraction": _r(v.dead_fraction),
            "saturated_fraction": _r(v.saturated_fraction),
            "dead_units": v.dead_units,
            "saturated_units": v.saturated_units,
            "saturated_low_units": v.saturated_low_units,
            "saturated_high_units": v.saturated_high_units,
            "rarely_firing_units": v.rarely_firing_units,
            "never_positive_units": v.never_positive_units,
            "nonfinite_values": int(st.nonfinite.sum()),
            "nonfinite_units": v.nonfinite_units,
            "fire_rate": {
                "min": _r(float(fr.min())) if fr.size else None,
                "mean": _r(float(fr.mean())) if fr.size else None,
                "max": _r(float(fr.max())) if fr.size else None,
            },
            "pre_activation": {
                "min": _r(float(st.min.min())) if st.units else None,
                "max": _r(float(st.max.max())) if st.units else None,
            },
        }
        if info.model_output:
            d["model_output"] = True
        if v.proven_dead_units is not None:
            d["proven_dead_units"] = v.proven_dead_units
        if v.proof_note:
            d["proof_note"] = v.proof_note
        if self.per_unit:
            d["per_unit"] = {
                "fire_rate": [_r(float(x)) for x in v.fire_rate],
                "stuck_low_rate": [_r(float(x)) for x in v.low_rate],
                "stuck_high_rate": [_r(float(x)) for x in v.high_rate],
                "min": [_r(float(x)) for x in st.min],
                "max": [_r(float(x)) for x in st.max],
                "neg_mean": [_r(float(x)) for x in st.neg_mean()],
            }
        return d

    def to_dict(self) -> dict[str, Any]:
        from .._version import __version__

        return {
            "schema": SCHEMA,
            "tool": {"name": "actaudit", "version": __version__},
            "model": self.model,
            "calibration": self.calibration,
            "inputs": self.inputs,
            "settings": self.settings.to_dict(),
            "summary": self.summary(),
            "gates": [g.to_dict() for g in self.gates],
            "passed": self.passed,
            "sites": [self.site_dict(i, v) for i, v in enumerate(self.sites)],
            "uncovered": [u.to_dict() for u in self.uncovered],
            "warnings": list(self.warnings),
            **({"notes": list(self.notes)} if self.notes else {}),
            **({"baseline": self.baseline} if self.baseline is not None else {}),
            **({"counters": self.counters} if self.counters is not None else {}),
            "run": self.run,
        }

    def to_json(self, *, include_run: bool = True) -> str:
        d = self.to_dict()
        if not include_run:
            d.pop("run")
        return json.dumps(d, indent=2, sort_keys=False, allow_nan=False) + "\n"

    def render(self, fmt: str = "table", *, color: bool = False, width: int | None = None) -> str:
        from .text import render

        return render(self, fmt, color=color, width=width)


def _thresholds(v: SiteVerdict, s: Settings) -> tuple[float | None, float | None]:
    from ..kinds import Activation

    t = Activation(v.info.kind, v.info.params).thresholds(s.stuck_fraction)
    return (t.low if math.isfinite(t.low) else None, t.high if math.isfinite(t.high) else None)


def rows_for_csv(report: Report) -> str:
    buf = io.StringIO()
    w = csv_writer(buf)  # names neutralised: no formulas, no control characters
    w.writerow(
        [
            "index",
            "name",
            "op",
            "kind",
            "unit_axis",
            "units",
            "dead",
            "saturated",
            "rarely_firing",
            "never_positive",
            "dead_fraction",
            "saturated_fraction",
            "fire_rate_mean",
            "samples",
            "dead_units",
            "saturated_units",
        ]
    )
    for i, v in enumerate(report.sites):
        d = report.site_dict(i, v)
        w.writerow(
            [
                i,
                d["name"],
                d["op"],
                d["kind"],
                d["unit_axis"],
                d["units"],
                d["dead"],
                d["saturated"],
                d["rarely_firing"],
                d["never_positive"],
                d["dead_fraction"],
                d["saturated_fraction"],
                d["fire_rate"]["mean"] if v.can_die else "",  # as the table: a bounded unit does not "fire"
                d["coverage"]["samples"],
                " ".join(map(str, d["dead_units"])),
                " ".join(map(str, d["saturated_units"])),
            ]
        )
    return buf.getvalue()
