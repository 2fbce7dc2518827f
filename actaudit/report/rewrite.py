"""The rewrite report: what was rewritten with which slope, and what it did to the outputs.

``RewriteReport.to_dict()`` is the schema ``actaudit.rewrite/1``. ``render()`` returns a
string; only the CLI prints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..edit.drift import Drift
from ..jsonform import dicts, envelope, picked
from ..jsonform import json_float as _r
from ..sanitize import text
from .change import ModelChange
from .draw import Document, Lines, Table, to_json
from .draw import render as draw_render

SCHEMA = "actaudit.rewrite/1"
# Context, not defaults: Maas et al. 2013 (PyTorch's default), the test-time slope of
# RReLU in Xu et al. 2015, and PReLU's initial slope in He et al. 2015.
REFERENCE_SLOPES = {"leaky_relu_default": 0.01, "rrelu_test_time": 1 / 5.5, "prelu_init": 0.25}


@dataclass
class SiteRewrite:
    name: str
    op: str
    units: int
    unit_axis: int
    dead: int
    status: str  # rewritten | skipped | unchanged
    alpha: float | None = None
    revived: int = 0
    how: str | None = None
    reason: str | None = None  # why skipped
    gain: float | None = None
    predicted_drift: float | None = None
    measured_drift: Drift | None = None  # this site alone at its slope
    compensation: str | None = None  # where it was folded, or why not
    alpha_min: float | None = None  # the smallest per-unit slope at this site
    unit_slopes: dict[int, float] | None = None  # revived unit → slope (per-unit default)
    recycled: dict[str, Any] | None = None  # --mode recycle: producer, consumer, init std, units
    unit_shifts: dict[int, float] | None = (
        None  # unit → constant subtracted after the activation (nonzero only)
    )
    rank: int | None = None  # the site tensor's rank, batch included (to rebuild the shift's shape)

    def to_dict(self) -> dict[str, Any]:
        return {
            **picked(self, "name", "op", "units", "unit_axis", "dead", "status"),
            "alpha": _r(self.alpha),
            "revived": self.revived,
            "how": self.how,
            "reason": self.reason,
            "gain": _r(self.gain),
            "predicted_drift": _r(self.predicted_drift),
            "measured_drift": self.measured_drift.to_dict() if self.measured_drift else None,
            "compensation": self.compensation,
            "alpha_min": _r(self.alpha_min if self.alpha_min is not None else self.alpha),
            "unit_slopes": {str(u): _r(a) for u, a in self.unit_slopes.items()} if self.unit_slopes else None,
            "recycled": self.recycled,
            "unit_shifts": {str(u): _r(v) for u, v in self.unit_shifts.items()} if self.unit_shifts else None,
        }


@dataclass
class RewriteReport(ModelChange):
    sites: list[SiteRewrite]
    drift_uncompensated: Drift | None = None
    search: dict[str, Any] = field(default_factory=dict)
    audit_summary: dict[str, Any] = field(default_factory=dict)
    expected_slopes: list[Any] = field(default_factory=list)  # what the verification must read back
    trainable: list[str] = field(
        default_factory=list
    )  # the written model's tensors that fine-tuning should train

    @property
    def rewritten(self) -> list[SiteRewrite]:
        return [s for s in self.sites if s.status == "rewritten"]

    @property
    def drift_ok(self) -> bool:
        """The final measured drift is within --max-drift."""
        d = self.final_drift
        return d is not None and d.rel_l2 <= float(self.options["max_drift"])

    @property
    def revived(self) -> int:
        return sum(s.revived for s in self.rewritten)

    @property
    def passed(self) -> bool:
        """Within the drift budget and at least one dead unit revived (with ``--slope-units all``:
        at least one site rewritten)."""
        if not self.drift_ok:
            return False
        if self.options.get("slope_units") == "all":
            return bool(self.rewritten)
        return self.revived > 0

    @property
    def slopes(self) -> dict[str, float]:
        return {s.name: float(s.alpha) for s in self.rewritten if s.alpha is not None}

    def summary(self) -> dict[str, Any]:
        rw = self.rewritten
        return {
            "sites_rewritten": len(rw),
            "sites_skipped": sum(1 for s in self.sites if s.status == "skipped"),
            "dead_units": sum(s.dead for s in self.sites),
            "revived_units": sum(s.revived for s in rw),
            "alpha_min": _r(
                min(
                    (s.alpha_min if s.alpha_min is not None else s.alpha for s in rw if s.alpha is not None),
                    default=math.nan,
                )
            ),
            "alpha_max": _r(max((s.alpha for s in rw if s.alpha is not None), default=math.nan)),
            **dicts(self, "drift", "drift_uncompensated", "drift_verified"),
            "passed": self.passed,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            **envelope(SCHEMA),
            **picked(self, "model", "output", "calibration", "options"),
            "summary": self.summary(),
            "passed": self.passed,
            "sites": [s.to_dict() for s in self.sites],
            "search": self.search,
            "reference_slopes": {k: _r(v) for k, v in REFERENCE_SLOPES.items()},
            "audit_summary": self.audit_summary,
            "trainable": list(self.trainable),
            **picked(self, "notes", "warnings", "run"),
        }

    def to_json(self) -> str:
        return to_json(self.to_dict())

    def document(self) -> Document:
        """The sites with their slopes and drifts, then the drift, compensation, search and gate."""
        return Document(_title(self), [_site_table(self), Lines(_remarks(self))], _csv(self))

    def render(self, fmt: str = "table") -> str:
        return draw_render(self, fmt)


def _f(x: float | None, spec: str = ".4g") -> str:
    return "-" if x is None or not math.isfinite(x) else format(x, spec)


def _site_table(rep: RewriteReport) -> Table:
    headers = ["site", "units", "dead", "revived", "α", "pred. drift", "meas. drift", "status"]
    rows = []
    for s in rep.sites:
        status = s.status if s.status != "skipped" else f"skipped: {s.reason}"
        if s.status == "rewritten" and s.how and s.how not in ("module swap", "graph node"):
            status = f"rewritten ({s.how})"
        alpha = (
            _f(s.alpha)
            if s.alpha_min is None or s.alpha_min == s.alpha
            else f"{_f(s.alpha_min)}–{_f(s.alpha)}"
        )
        rows.append(
            [
                text(s.name),  # names come from the file: no terminal escapes
                s.units,
                s.dead,
                s.revived if s.status == "rewritten" else "-",
                alpha,
                _f(s.predicted_drift),
                _f(s.measured_drift.rel_l2 if s.measured_drift else None),
                text(status),
            ]
        )
    return Table(headers, rows)


def _title(rep: RewriteReport) -> str:
    m, o = rep.model, rep.options
    head = f"{m.get('path')} [{m.get('format')}] → {rep.output.get('path') or '(not written)'}"
    if rep.output.get("format"):
        head += f" [{rep.output['format']}]"
    return (
        head
        + (f" — mode {o['mode']}" if o.get("mode", "deploy") != "deploy" else "")
        + f" — {o['to']}, α {o['alpha']}, max drift {o['max_drift']:g}, {rep.calibration.get('samples')} samples"
    )


def _drift_lines(rep: RewriteReport) -> list[str]:
    d = rep.final_drift
    if d is None:
        return []
    top1 = f", top-1 agreement {100 * d.top1:.2f}%" if d.top1 is not None else ""
    which = "written file" if rep.drift_verified else "in memory"
    out = [f"output drift ({which}): relative L2 {d.rel_l2:.4g}, max |Δ| {d.max_abs:.4g}{top1}"]
    for name, rel in d.per_output.items():
        share = d.energy_share.get(name, 0.0)
        counted = name in (rep.options.get("drift_outputs") or [name])
        out.append(
            f"  output {name}: relative L2 {rel:.4g}, {100 * share:.3g}% of ‖y‖²"
            + ("" if counted else " (not counted: --drift-outputs)")
        )
    return out


def _remarks(rep: RewriteReport) -> list[str]:
    o = rep.options
    foot = _drift_lines(rep)
    k, n = rep.revived, sum(s.dead for s in rep.sites)
    foot.append(
        f"revived {k} of {n} dead unit(s)" + (f" (slope >= {o['min_slope']:g})" if "min_slope" in o else "")
    )
    if rep.drift_uncompensated is not None:
        u = rep.drift_uncompensated
        foot.append(f"without compensation: relative L2 {u.rel_l2:.4g}, max |Δ| {u.max_abs:.4g}")
    foot += [f"compensation at {s.name}: {s.compensation}" for s in rep.rewritten if s.compensation]
    srch = rep.search
    if srch:
        foot.append(
            f"search: {srch.get('method')}, {srch.get('passes')} passes over the calibration data "
            f"({', '.join(f'{k} {v:g}' for k, v in srch.get('passes_by_purpose', {}).items())})"
        )
    foot.append(f"gate relative-drift<={o['max_drift']:g}: {'passed' if rep.passed else 'FAILED'}")
    foot.extend(f"to train: {text(t)}" for t in rep.trainable)
    foot.append(
        "reference slopes (context, not defaults): 0.01 (Maas 2013), 1/5.5≈0.18 (RReLU test time), 0.25 (PReLU init)"
    )
    foot.extend(f"note: {n}" for n in rep.notes)
    foot.extend(f"warning: {w}" for w in rep.warnings)
    return foot


CSV_COLUMNS = (
    "name",
    "op",
    "units",
    "unit_axis",
    "dead",
    "status",
    "alpha",
    "revived",
    "predicted_drift",
    "measured_drift",
    "compensation",
    "reason",
)


def _csv(rep: RewriteReport) -> Table:
    rows: list[list[Any]] = [
        [
            s.name,
            s.op,
            s.units,
            s.unit_axis,
            s.dead,
            s.status,
            _r(s.alpha),
            s.revived,
            _r(s.predicted_drift),
            _r(s.measured_drift.rel_l2) if s.measured_drift else None,
            s.compensation or "",
            s.reason or "",
        ]
        for s in rep.sites
    ]
    return Table(CSV_COLUMNS, rows)
