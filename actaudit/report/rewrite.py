"""The rewrite report: what was rewritten with which slope, and what it did to the outputs.

``RewriteReport.to_dict()`` is the schema ``actaudit.rewrite/1``. ``render()`` returns a
string; only the CLI prints.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from ..edit.drift import Drift
from ..jsonform import dicts, envelope, picked
from ..jsonform import json_float as _r
from ..sanitize import text
from . import terminal
from .change import ModelChange
from .draw import Document, Lines, Table, grid, layout, plain, to_json
from .draw import render as draw_render

SCHEMA = "actaudit.rewrite/1"
# Context, not defaults: Maas et al. 2013 (PyTorch's default), the test-time slope of
# RReLU in Xu et al. 2015, and PReLU's initial slope in He et al. 2015.
REFERENCE_SLOPES = {"leaky_relu_default": 0.01, "rrelu_test_time": 1 / 5.5, "prelu_init": 0.25}
NO_DEAD = "no dead units"  # the one wording, in the table, the remarks and the JSON reasons
NO_DEAD_MODEL = f"{NO_DEAD} at any ReLU / ReLU6 site on this calibration data: nothing to revive"


@dataclass
class GridPoint:
    """One slope of the evidence grid: drift with / without the exact shift, leak share, gradient ratio."""

    alpha: float
    drift_shift: float | None
    drift_noshift: float | None
    leak: float  # α²·Σ min(z, 0)² / Σ max(z, 0)²
    gradient_ratio: float | None  # E|∂L/∂z| of a dead unit at α over a live unit's
    measured: bool  # drifts measured at this α (else scaled from the measurement at the reference α)

    def to_dict(self) -> dict[str, object]:
        return {
            "alpha": _r(self.alpha),
            "drift_shift": _r(self.drift_shift),
            "drift_no_shift": _r(self.drift_noshift),
            "leak_share": _r(self.leak),
            "gradient_ratio": _r(self.gradient_ratio),
            "measured": self.measured,
        }


@dataclass
class SiteEvidence:
    name: str
    units: int
    dead: int
    live_fire_rate: float | None  # mean firing fraction of the live units
    zero_share: float  # share of output elements exactly zero under ReLU (0 under any α > 0)
    grid: list[GridPoint]

    def to_dict(self) -> dict[str, object]:
        return {
            **picked(self, "name", "units", "dead"),
            "live_fire_rate": _r(self.live_fire_rate),
            "zero_share_relu": _r(self.zero_share),
            "zero_share_leaky": 0.0,
            "grid": [g.to_dict() for g in self.grid],
        }


@dataclass
class SlopeEvidence:
    """``LeakyReLU(α)`` on every unit of the rewritten sites over a grid of α, measured on the calibration data."""

    grid: list[float]
    samples: int  # calibration samples per measurement
    passes: float
    budget: float
    model: list[GridPoint]  # all sites at once, measured at every α
    sites: list[SiteEvidence]
    suggested_alpha: float | None
    seconds: float | None = None  # wall time of the grid's measurements

    def to_dict(self) -> dict[str, object]:
        return {
            "grid": [_r(a) for a in self.grid],
            "samples": self.samples,
            "passes": self.passes,
            "seconds": self.seconds,
            "max_drift": _r(self.budget),
            "suggested_alpha": _r(self.suggested_alpha),
            "why": self.why(),
            "model": [g.to_dict() for g in self.model],
            "sites": [s.to_dict() for s in self.sites],
        }

    def why(self) -> str:
        if self.suggested_alpha is None:
            first = self.model[0] if self.model else None
            over = (
                f" (α {first.alpha:g} drifts {first.drift_shift:.3g})" if first and first.drift_shift else ""
            )
            return f"no slope of the grid keeps the drift within {self.budget:g} with the exact shift{over}"
        g = next(p for p in self.model if p.alpha == self.suggested_alpha)
        grad = (
            f"; a revived unit gets {g.gradient_ratio:.3g}× a live unit's gradient"
            if g.gradient_ratio
            else ""
        )
        plain_drift = (
            f"without the shift {g.drift_noshift:.3g}"
            if g.drift_noshift is not None
            else "without the shift -"
        )
        return (
            f"the largest grid slope within {self.budget:g}: drift {g.drift_shift:.3g} with the exact shift, "
            f"{plain_drift}{grad}"
        )

    def table(self) -> Table:
        rows = [
            [
                _f(g.alpha),
                _f(g.drift_shift),
                _f(g.drift_noshift),
                _f(g.leak),
                _f(g.gradient_ratio),
                "yes" if g.drift_shift is not None and g.drift_shift <= self.budget else "no",
            ]
            for g in self.model
        ]
        return Table(["α", "drift (shift)", "drift (no shift)", "leak share", "grad. ratio", "fits"], rows)

    def site_table(self, alpha: float = 0.01) -> Table:
        """Per site at ``alpha``: firing of its live units, exact zeros under ReLU, drift alone, gradient ratio."""
        rows = []
        for s in self.sites:
            g = next((x for x in s.grid if x.alpha == alpha), None)
            if g is None:
                continue
            rows.append(
                [
                    text(s.name),
                    s.dead,
                    _f(s.live_fire_rate, ".3g"),
                    _f(s.zero_share, ".3g"),
                    _f(g.drift_shift),
                    _f(g.drift_noshift),
                    _f(g.gradient_ratio),
                ]
            )
        head = ["site", "dead", "live fire", "zeros", f"drift α={alpha:g}", "no shift", "grad. ratio"]
        return Table(head, rows)


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
    recycled: dict[str, object] | None = None  # --mode recycle: producer, consumer, init std, units
    unit_shifts: dict[int, float] | None = (
        None  # unit → constant subtracted after the activation (nonzero only)
    )
    rank: int | None = None  # the site tensor's rank, batch included (to rebuild the shift's shape)

    @property
    def recycled_units(self) -> list[int]:
        """The units that ``--mode train`` / ``recycle`` re-initialised at this site."""
        units = (self.recycled or {}).get("units")
        return [int(u) for u in units] if isinstance(units, list) else []

    def why(self) -> str | None:
        """Why a site was skipped or left unchanged (None when rewritten)."""
        if self.status == "rewritten":
            return None
        return self.reason or (NO_DEAD if self.dead == 0 else "not selected (--sites)")

    def to_dict(self) -> dict[str, object]:
        return {
            **picked(self, "name", "op", "units", "unit_axis", "dead", "status"),
            "alpha": _r(self.alpha),
            "revived": self.revived,
            "how": self.how,
            "reason": self.why(),
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
    search: dict[str, object] = field(default_factory=dict)
    audit_summary: Mapping[str, object] = field(default_factory=dict)
    expected_slopes: list[Any] = field(default_factory=list)  # what the verification must read back
    evidence: SlopeEvidence | None = None  # the α grid (rewrite/evidence.py)
    fits_terminal = True  # render() takes a terminal width
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
        return d is not None and d.rel_l2 <= float(cast(float, self.options["max_drift"]))

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

    def summary(self) -> dict[str, object]:
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

    def to_dict(self) -> dict[str, object]:
        return {
            **envelope(SCHEMA),
            **picked(self, "model", "output", "calibration", "options"),
            "summary": self.summary(),
            "passed": self.passed,
            "sites": [s.to_dict() for s in self.sites],
            "search": self.search,
            "reference_slopes": {k: _r(v) for k, v in REFERENCE_SLOPES.items()},
            "evidence": self.evidence.to_dict() if self.evidence is not None else None,
            "audit_summary": self.audit_summary,
            "trainable": list(self.trainable),
            **picked(self, "notes", "warnings", "run"),
        }

    def to_json(self) -> str:
        return to_json(self.to_dict())

    def document(self) -> Document:
        """The sites with their slopes and drifts, then the drift, compensation, search and gate."""
        body: list[Table | Lines | str] = [_site_table(self), Lines(_remarks(self))]
        if self.evidence is not None:
            body += ["", _evidence_title(self.evidence), self.evidence.table(), _SITE_EVIDENCE]
            body.append(self.evidence.site_table())
        return Document(_title(self), body, _csv(self))

    def to_html(self) -> str:
        """One HTML page: the sites and the α evidence (chart and table)."""
        from .rewrite_html import render_rewrite_html

        return render_rewrite_html(self.to_dict(), [status_text(s) for s in self.sites])

    def render(self, fmt: str = "table", *, width: int | None = None) -> str:
        """``width`` (the CLI passes the terminal's) narrows the table form: site names elided, remarks wrapped."""
        if fmt == "table" and width is not None:
            return _fitted(self, width)
        return draw_render(self, fmt)


def _f(x: float | None, spec: str = ".4g") -> str:
    return "-" if x is None or not math.isfinite(x) else format(x, spec)


def status_text(s: SiteRewrite) -> str:
    """The status cell: skipped and unchanged sites say why."""
    if s.status == "rewritten":
        return f"rewritten ({s.how})" if s.how and s.how not in ("module swap", "graph node") else "rewritten"
    return f"{s.status}: {s.why()}"


def _site_table(rep: RewriteReport) -> Table:
    headers = ["site", "units", "dead", "revived", "α", "pred. drift", "meas. drift", "status"]
    rows = []
    for s in rep.sites:
        status = status_text(s)
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


_SITE_EVIDENCE = (
    "per site (each alone, exact zeros become α·z under any α > 0; drift at other α scales linearly):"
)


def _evidence_title(ev: SlopeEvidence) -> str:
    return (
        f"LeakyReLU(α) on every unit of the rewritten sites, measured on {ev.samples} samples "
        f"({ev.passes:g} passes); suggested α: {_f(ev.suggested_alpha)} — {ev.why()}"
    )


def _fitted(rep: RewriteReport, width: int) -> str:
    """The table form within ``width`` columns, as the audit table fits: columns with nothing to
    show dropped, how a site was rewritten said once below the table, site names elided, the
    status cut in the middle only when it still does not fit, remarks wrapped."""
    table = _site_table(rep)
    if max((len(plain(x)) for x in grid(table, markdown=False).splitlines()), default=0) <= width:
        return draw_render(rep, "table")
    keep = [
        j for j, h in enumerate(table.headers) if j in (0, 7) or any(str(r[j]) != "-" for r in table.rows)
    ]
    headers = [table.headers[j] for j in keep]
    rows = [[r[j] for j in keep] for r in table.rows]
    hows = sorted({s.how for s in rep.sites if s.status == "rewritten" and s.how})
    for r, site in zip(rows, rep.sites, strict=True):
        r[-1] = "rewritten" if site.status == "rewritten" else status_text(site)
    names, status = [str(r[0]) for r in rows], [str(r[-1]) for r in rows]
    for r in rows:
        r[0], r[-1] = "", ""
    right = set(range(1, len(headers) - 1))
    room = width - len(layout(headers, rows, "  ", right)[1]) + len("site") + len("status")  # both columns
    name_w = max(
        min(max(map(len, names), default=4), max(terminal.MIN_SITE_WIDTH, room - max(map(len, status)))), 4
    )
    fitted: list[list[Any]] = []
    for r, n, st in zip(rows, names, status, strict=True):  # a long status goes on under its row
        first, *more = textwrap.wrap(st, max(room - name_w, 12), break_on_hyphens=False) or [""]
        r[0], r[-1] = terminal.elide(n, name_w), first
        fitted += [r, *[[""] * (len(r) - 1) + [m] for m in more]]
    out = [*terminal.wrap(text(_title(rep)), width), *layout(headers, fitted, "  ", right)]
    remarks = [f"rewritten as: {h}" for h in hows] + _remarks(rep)
    for line in remarks:
        out += terminal.wrap(text(line), width)
    if rep.evidence is not None:
        out += ["", *terminal.wrap(text(_evidence_title(rep.evidence)), width)]
        ev = rep.evidence.table()
        short = ["α", "drift", "no shift", "leak", "grad.", "fits"]
        out += layout(short, ev.rows, "  ", {1, 2, 3, 4})
        out += terminal.wrap("drift: with the exact shift; leak: leak share; grad.: gradient ratio", width)
        out += terminal.wrap(_SITE_EVIDENCE, width)
        per_site = rep.evidence.site_table()
        names = [str(r[0]) for r in per_site.rows]
        rows = [["", *r[1:]] for r in per_site.rows]
        short = ["site", "dead", "fire", "zeros", "drift", "no shift", "grad."]
        room = width - len(layout(short, rows, "  ", {1, 2, 3, 4, 5, 6})[1])
        for r, n in zip(rows, names, strict=True):
            r[0] = terminal.elide(n, max(room, 8))
        out += layout(short, rows, "  ", {1, 2, 3, 4, 5, 6})
    return "\n".join(out) + "\n"


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
        counted = name in (cast(list[str] | None, rep.options.get("drift_outputs")) or [name])
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
            f"({', '.join(f'{k} {v:g}' for k, v in cast(dict[str, float], srch.get('passes_by_purpose', {})).items())})"
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
            s.why() or "",
        ]
        for s in rep.sites
    ]
    return Table(CSV_COLUMNS, rows)
