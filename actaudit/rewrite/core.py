"""``rewrite(model, data, ...) -> RewriteReport``: audit, choose slopes, rewrite, verify, write.

Data flows one way: load → one audit pass that also records the original outputs →
select ReLU / ReLU6 sites → search slopes (per dead unit by default, :mod:`.units`; per
site with ``--to leaky`` / ``--slope-units all``, :mod:`.search`) on rewritten variants → write to a temporary file
beside the output → reload it from disk, check it and re-measure its drift → rename.
Any failure after the temporary file exists removes it; the input is only read.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..assemble import model_section
from ..backends.base import Surgery
from ..edit.drift import Drift, Ledger
from ..edit.folder import FOLDER, refuse_folder_output
from ..edit.slopes import SlopePlan, SurgeryResult, float32_up
from ..errors import InputError
from ..loading import load_model
from ..naming import former_note, matches
from ..options import AuditOptions
from ..variants import Original, VerificationError, check_output, measure_original, options_from
from ..verdicts import SiteVerdict
from .evidence import slope_evidence
from .recycling import RECYCLE_MODES, trainable_tensors
from .report import NO_DEAD_MODEL, RewriteReport, SiteRewrite
from .search import DEFAULT_RANGE, Measure, SearchResult, SearchSite, auto_slopes, fixed_slopes
from .training import TRAIN_MODE, check_train, recycle_mode
from .units import UnitSite, centered_energy, search_units, site_energy
from .verify import expected_slopes, group_passes, publish, record_shifts

__all__ = ["RewriteOptions", "VerificationError", "check_output", "rewrite", "validate"]

DEFAULT_MAX_DRIFT = 0.01
DEFAULT_MAX_PASSES = 20.0
DEFAULT_MIN_SLOPE = 0.01  # the audit's stuck fraction: a smaller slope still counts as dead
TARGETS = ("leaky", "prelu")
# train: recycle where possible, deploy slopes elsewhere (:mod:`.training`); deploy: fixed slopes with
# the exact shift; learnable: the same as bounded PReLU parameters; recycle(-leaky): :mod:`.recycling`.
MODES = (TRAIN_MODE, "deploy", "learnable", *RECYCLE_MODES)
DEFAULT_MODE = TRAIN_MODE  # chosen with bench/revival.py: the reason to rewrite is to train on
SHIFTS = ("exact", "fold", "none")
REWRITABLE_KINDS = ("relu", "relu6")
OUTPUT_FORMATS = ("ts", "pt2")


@dataclass
class RewriteOptions:
    """Every knob of a rewrite; audit knobs (calibration, loading) live in ``audit``."""

    mode: str = DEFAULT_MODE  # one of MODES
    alpha: float | None = None  # None: search ("auto"); recycle-leaky: the slope of recycled units
    alpha_range: tuple[float, float] = DEFAULT_RANGE
    max_drift: float = DEFAULT_MAX_DRIFT
    to: str = "prelu"
    sites: str = "dead"  # dead | all | a glob on site names
    compensate: bool = False  # the old name of shift="fold"
    slope_units: str | None = None  # dead (default with prelu) | all (the only choice with leaky)
    min_slope: float = DEFAULT_MIN_SLOPE
    shift: str = "exact"  # exact: subtract slope·E[min(z,0)] after the activation | fold | none
    drift_outputs: str | None = None  # NAME[,NAME]: the outputs the drift is measured over
    write_over_budget: bool = False  # write the best choice found even when it is over --max-drift
    output: str | os.PathLike[str] | None = None
    output_format: str | None = None  # ts | pt2, for eager inputs
    force: bool = False
    max_passes: float = DEFAULT_MAX_PASSES
    audit: AuditOptions = field(default_factory=AuditOptions)


def rewrite_options(kw: dict[str, object]) -> RewriteOptions:
    return options_from(RewriteOptions, kw, "rewrite")


def validate(opts: RewriteOptions) -> None:
    if opts.mode not in MODES:
        raise InputError(f"--mode {opts.mode!r}: use one of {', '.join(MODES)}")
    if opts.mode == "learnable" and (opts.to != "prelu" or opts.alpha is not None):
        raise InputError(
            "--mode learnable writes per-unit PReLU slopes: drop --to leaky / --alpha",
            hint="the slopes are searched per dead unit and become parameters clamped to [0, HIGH of --alpha-range]",
        )
    if opts.compensate:
        opts.shift = "fold"
    if opts.shift not in SHIFTS:
        raise InputError(f"--shift {opts.shift!r}: use one of {', '.join(SHIFTS)}")
    if opts.slope_units is None:
        opts.slope_units = "dead" if opts.to == "prelu" else "all"
    if not 0 < opts.min_slope < 1:
        raise InputError(f"--min-slope {opts.min_slope:g}: a slope must be in (0, 1)")
    if opts.min_slope > opts.alpha_range[1]:
        raise InputError(
            f"--min-slope {opts.min_slope:g} is above the cap {opts.alpha_range[1]:g} (HIGH of --alpha-range)"
        )
    lo, hi = opts.alpha_range
    if not 0 < lo <= hi < 1:
        raise InputError(f"--alpha-range {lo:g},{hi:g}: need 0 < low <= high < 1")
    if opts.alpha is not None and not 0 < opts.alpha < 1:
        raise InputError(f"--alpha {opts.alpha:g}: a slope must be in (0, 1)")
    if not opts.max_drift > 0:
        raise InputError(f"--max-drift {opts.max_drift:g}: must be positive")
    if opts.to not in TARGETS:
        raise InputError(f"--to {opts.to!r}: use one of {', '.join(TARGETS)}")
    if opts.slope_units not in ("all", "dead"):
        raise InputError(f"--slope-units {opts.slope_units!r}: use all or dead")
    if opts.slope_units == "dead" and opts.to != "prelu":
        raise InputError(
            "--slope-units dead needs --to prelu", hint="a LeakyReLU has one slope for all units of a site"
        )
    if opts.shift == "fold" and opts.to == "prelu" and opts.slope_units == "dead":
        raise InputError(
            "--compensate / --shift fold works with one α per site: add --to leaky or --slope-units all",
            hint="the default exact shift (--shift exact) keeps the mean for any consumer",
        )
    if opts.output_format is not None and opts.output_format not in OUTPUT_FORMATS:
        raise InputError(f"--output-format {opts.output_format!r}: use one of {', '.join(OUTPUT_FORMATS)}")
    if opts.max_passes < 3:
        raise InputError("max_passes must be at least 3 (audit, one measurement, verification)")
    check_train(opts)


def _select(relu_sites: list[SiteVerdict], spec: str, notes: list[str] | None = None) -> list[SiteVerdict]:
    """The sites ``--sites`` names: dead, all, or globs on names, bases or former names (noted)."""
    if not relu_sites:
        raise InputError(
            "the model has no ReLU / ReLU6 site to rewrite",
            hint="run `actaudit audit` to see its activation sites",
        )
    if spec == "dead":
        return [v for v in relu_sites if v.dead_units]
    if spec == "all":
        return list(relu_sites)
    globs = [g.strip() for g in spec.split(",") if g.strip()]
    chosen, renamed = [], []
    for v in relu_sites:
        hits = [matches(g, v.info.name, v.info.former_name) for g in globs]
        if any(hit for hit, _ in hits):
            chosen.append(v)
            if not any(hit and not by_former for hit, by_former in hits):
                renamed.append((v.info.former_name or "", v.info.name))
    note = former_note("--sites", renamed)
    if note and notes is not None:
        notes.append(note)
    if not chosen:
        names = ", ".join(v.info.name for v in relu_sites[:12]) or "(none)"
        raise InputError(f"--sites {spec!r} matches no ReLU site", hint=f"ReLU sites are: {names}")
    return chosen


# -- one rewrite: the original measured once, variants built and measured against it ------------
@dataclass
class _Session:
    """A rewrite in progress: the options, the original, its surgeon and the pass ledger."""

    opts: RewriteOptions
    original: Original
    surgeon: Surgery
    ledger: Ledger
    notes: list[str]
    by_name: dict[str, SiteVerdict] = field(default_factory=dict)  # the selected sites

    @property
    def unit_mode(self) -> bool:
        """Per-unit slopes on dead units (the default), not one slope per site."""
        o = self.opts
        return o.to == "prelu" and o.slope_units == "dead" and o.alpha is None

    def plan(self, v: SiteVerdict, alpha: float, unit: dict[int, float] | None = None) -> SlopePlan:
        o = self.opts
        vec = None
        if unit is not None:
            vec = np.zeros(v.info.units, dtype=np.float64)
            for u, a in unit.items():
                vec[u] = a
            vec = float32_up(vec).astype(np.float64)
        return SlopePlan(
            v.info.name,
            float(alpha),
            units=v.info.units,
            unit_axis=v.info.unit_axis,
            sample_shape=tuple(v.info.sample_shape),
            neg_mean=v.stats.neg_mean(),
            only_units=list(v.dead_units) if o.slope_units == "dead" else None,
            unit_slopes=vec,
            exact_shift=o.shift == "exact",
            kind=v.info.kind,
            bound=o.alpha_range[1] if o.mode == "learnable" else None,
            former=v.info.former_name,
        )

    def site_plans(self, slopes: dict[str, float]) -> list[SlopePlan]:
        return [self.plan(self.by_name[n], a) for n, a in slopes.items()]

    def unit_plans(self, unit_slopes: dict[str, dict[int, float]]) -> list[SlopePlan]:
        return [self.plan(self.by_name[n], max(us.values()), us) for n, us in unit_slopes.items() if us]

    def build(self, plans: list[SlopePlan], compensate: bool = False) -> SurgeryResult:
        return self.surgeon.build(plans, self.opts.to, compensate)

    def run_variant(self, res: SurgeryResult, samples: int | None, purpose: str) -> Drift:
        from ..variants import variant_drift

        ref = self.original.ref
        nb = ref.batches_for(samples)
        produced = self.surgeon.outputs(res.model, self.original.source, self.opts.audit.samples, nb)
        d = variant_drift(ref, produced, nb)
        self.ledger.add(purpose, d.samples)
        progress = self.opts.audit.progress
        if progress is not None:
            progress(d.samples)
        return d

    def measure_sites(self, compensate: bool) -> Measure:
        def measure(slopes: dict[str, float], samples: int | None, purpose: str) -> Drift:
            return self.run_variant(self.build(self.site_plans(slopes), compensate), samples, purpose)

        return measure

    def measure_units(
        self, unit_slopes: dict[str, dict[int, float]], samples: int | None, purpose: str
    ) -> Drift:
        return self.run_variant(self.build(self.unit_plans(unit_slopes)), samples, purpose)


@dataclass
class _Outcome:
    """What the search chose: the drift it measured, the variant to write and the plans behind it."""

    search: SearchResult | None = None
    final: SurgeryResult | None = None
    plans: list[SlopePlan] = field(default_factory=list)
    uncompensated: Drift | None = None


def _start(model: object, data: object, opts: RewriteOptions) -> _Session:
    """Load, choose the writer (refusing a wrong ``--output-format`` before the run), one audit pass."""
    notes: list[str] = []
    loaded = load_model(model, opts.audit)
    out = Path(opts.output) if opts.output is not None else None
    writer = loaded.handle.writer(loaded.fmt, out, opts.output_format, notes)
    if writer == FOLDER and out is not None:  # a Hugging Face folder: weights only, never into the input
        refuse_folder_output(str(model), out, opts.mode)
    surgeon = loaded.handle.surgery(writer)
    original = measure_original(loaded, data, opts.audit, opts.drift_outputs)
    ledger = Ledger(original.ref.samples)
    ledger.add("audit + reference outputs", original.ref.samples)
    return _Session(opts, original, surgeon, ledger, notes)


def _dry_run(
    s: _Session, relu: list[SiteVerdict], selected: list[SiteVerdict]
) -> tuple[list[str], dict[str, SiteRewrite]]:
    """Every selected site rewritten at the cap once: which sites the surgeon can rewrite, one row each."""
    hi = s.opts.alpha_range[1]
    s.by_name = {v.info.name: v for v in selected}
    dry = s.build([s.plan(v, hi) for v in selected]) if selected else None
    ok = [n for n in s.by_name if dry is not None and n in dry.rewritten]
    if s.unit_mode:
        ok = [n for n in ok if s.by_name[n].dead_units]
    rows: dict[str, SiteRewrite] = {}
    for v in relu:
        n = v.info.name
        row = SiteRewrite(n, v.info.op, v.info.units, v.info.unit_axis, len(v.dead_units), "unchanged")
        if n in s.by_name and dry is not None:
            if n in dry.rewritten:
                row.status, row.how = "rewritten", dry.rewritten[n]
            else:
                row.status, row.reason = "skipped", dry.skipped.get(n, "not rewritten")
        rows[n] = row
    if dry is not None:
        s.notes.extend(dry.notes)
    for u in s.original.audit.uncovered:
        s.notes.append(f"not audited, so not rewritten: {u.name} ({u.op}): {u.reason}")
    return ok, rows


def _unit_search(s: _Session, ok: list[str], rows: dict[str, SiteRewrite]) -> _Outcome:
    """Per-unit slopes on dead units (:mod:`.units`), cheapest first, under the drift budget."""
    o = s.opts
    ynorm = s.original.ref.norm()
    usites = []
    for n in ok:
        v = s.by_name[n]
        dead, st = list(v.dead_units), v.stats
        e = centered_energy(st.neg_sq, st.neg_mean(), st.finite_elements)[dead] / (ynorm**2)
        usites.append(UnitSite(n, dead, e))
    hi = o.alpha_range[1]
    ures = search_units(
        usites,
        s.measure_units,
        budget=o.max_drift,
        total_samples=s.original.ref.samples,
        passes=max(1.0, o.max_passes - s.ledger.passes - (1.0 if o.output else 0.0)),
        min_slope=o.min_slope,
        cap=hi,
    )
    over = ures.best_infeasible if not ures.feasible else None
    use = ures.slopes if ures.feasible else (over[0] if over else {})
    search = SearchResult(
        slopes={n: max(us.values()) for n, us in use.items() if us},
        drift=ures.drift,
        feasible=ures.feasible,
        gains=ures.gains,
        gain_source=ures.gain_source,
        predicted={},
        predicted_total=ures.predicted_total,
        steps=ures.steps,
    )
    final = s.build(s.unit_plans(use)) if use else None
    if final is not None:
        s.notes.extend(x for x in final.notes if x not in s.notes)
    for n in ok:
        r, us = rows[n], use.get(n, {})
        if not us:
            r.status, r.how = "unchanged", None
            r.reason = "no dead unit of this site fits the drift budget"
            continue
        r.alpha, r.alpha_min = max(us.values()), min(us.values())
        r.unit_slopes = {int(u): float(float32_up(np.array([a]))[0]) for u, a in sorted(us.items())}
        r.revived = sum(1 for a in us.values() if a >= o.min_slope)
        r.gain = ures.gains.get(n)
        if final is not None and n in final.skipped:
            r.status, r.reason = "skipped", final.skipped[n]
    if not ures.feasible:
        s.notes.append(_nothing_fits(o, over, sum(len(s.by_name[n].dead_units) for n in ok)))
    return _Outcome(search, final, s.unit_plans(use))


def _nothing_fits(
    o: RewriteOptions, over: tuple[dict[str, dict[int, float]], Drift] | None, dead: int
) -> str:
    what = (
        f"the cheapest change measured drifts {over[1].rel_l2:.4g} "
        f"({sum(len(x) for x in over[0].values())} unit(s) at slope {o.min_slope:g}: "
        + ", ".join(f"{n} unit {u}" for n, us in over[0].items() for u in list(us)[:3])
        + ")"
        if over
        else "no variant could be measured within the pass budget"
    )
    return (
        f"no dead unit fits --max-drift {o.max_drift:g}: {what}; of {dead} dead unit(s) none was "
        "revived. What would fit: a larger --max-drift (at least the drift above), a smaller --min-slope "
        "(the unit then still counts as dead), or --drift-outputs to measure only the outputs you care about"
    )


def _site_search(s: _Session, ok: list[str], rows: dict[str, SiteRewrite]) -> _Outcome:
    """One slope per site (:mod:`.search`): searched, or ``--alpha`` measured; ``--shift fold`` compared."""
    o = s.opts
    fold = o.shift == "fold"
    ynorm = s.original.ref.norm()
    ssites = [
        SearchSite(
            n,
            max(1.0, float(len(s.by_name[n].dead_units))),
            site_energy(s.by_name[n], o.slope_units == "dead") / ynorm,
        )
        for n in ok
    ]
    reserve = 1.0 + (1.0 if fold else 0.0) + (1.0 if o.output else 0.0)
    passes = max(1.0, o.max_passes - s.ledger.passes - reserve)
    measure, total = s.measure_sites(fold), s.original.ref.samples
    if o.alpha is None:
        lo, hi = _slope_range(o)
        search = auto_slopes(
            ssites, measure, budget=o.max_drift, total_samples=total, passes=passes, lo=lo, hi=hi
        )
    else:
        search = fixed_slopes(
            ssites, o.alpha, measure, total_samples=total, passes=passes, budget=o.max_drift
        )
    final = s.build(s.site_plans(search.slopes), fold)
    s.notes.extend(x for x in final.notes if x not in s.notes)
    d_nocomp = None
    if fold:
        d_nocomp = s.measure_sites(False)(search.slopes, None, "without compensation")
        if d_nocomp.rel_l2 < search.drift.rel_l2:
            s.notes.append(
                f"compensation made the drift worse here ({search.drift.rel_l2:.4g} with, {d_nocomp.rel_l2:.4g} "
                "without): folds next to zero padding over-correct at the borders; consider running without --compensate"
            )
    _site_rows(s, ok, rows, search, final)
    return _Outcome(search, final, s.site_plans(search.slopes), d_nocomp)


def _site_rows(
    s: _Session, ok: list[str], rows: dict[str, SiteRewrite], search: SearchResult, final: SurgeryResult
) -> None:
    o = s.opts
    for n in ok:
        r = rows[n]
        r.alpha = search.slopes[n]
        r.gain = search.gains.get(n)
        r.predicted_drift = search.predicted.get(n)
        r.measured_drift = search.site_drift.get(n)
        r.revived = len(s.by_name[n].dead_units) if r.alpha >= o.min_slope else 0
        if n in final.skipped:  # should not happen after the dry run
            r.status, r.reason = "skipped", final.skipped[n]
        if o.shift == "fold":
            r.compensation = (
                final.compensated.get(n)
                or f"not compensated: {final.not_compensated.get(n, 'no linear op found')}"
            )
        elif o.shift == "exact":
            r.compensation = "exact shift after the activation"
    stuck = o.audit.settings.stuck_fraction
    low = [n for n in ok if search.slopes[n] < stuck]
    if low:
        s.notes.append(
            f"{len(low)} site(s) got α below the stuck fraction {stuck:g} ({', '.join(low[:5])}): a unit with so "
            "small a slope still counts as dead in an audit, though it does get a gradient"
        )
    if search.gain_source == "probe" and not search.site_drift and len(ok) > 1:
        s.notes.append("per-site drift was not measured alone: the pass budget was spent on the search")


def _slope_range(o: RewriteOptions) -> tuple[float, float]:
    """``--alpha-range`` with its floor raised to ``--min-slope`` (below the cap)."""
    lo, hi = o.alpha_range
    return max(lo, min(o.min_slope, hi)), hi


def _nothing_to_search(s: _Session, selected: list[SiteVerdict], rows: dict[str, SiteRewrite]) -> None:
    """No site to search: a note when nothing has dead units, an error when nothing can be rewritten."""
    o = s.opts
    if not selected or (s.unit_mode and not any(s.by_name[n].dead_units for n in s.by_name)):
        s.notes.append(
            f"{NO_DEAD_MODEL} (use --sites all --slope-units all to add slopes anyway)"
            if o.sites == "dead" or s.unit_mode
            else "no site selected"
        )
        return
    why = "; ".join(f"{r.name}: {r.reason}" for r in rows.values() if r.status == "skipped")
    raise InputError(f"none of the selected ReLU sites can be rewritten: {why}")


_METHODS = {
    "probe": "per-site probes + confirmation",
    "statistics": "statistics + confirmation",
    "fixed": "fixed α",
    "screen": "per-site probes + per-unit screening + confirmation",
    "recycle": "recycle (no search: the function is kept by construction, drift measured)",
    "train": "recycle + per-unit probes and confirmation at the sites not recycled",
}


def _report(s: _Session, rows: dict[str, SiteRewrite], out: _Outcome) -> RewriteReport:
    o, audit, search = s.opts, s.original.audit, out.search
    report = RewriteReport(
        model=model_section(s.original.loaded),
        calibration={**audit.calibration},
        options={
            "mode": o.mode,
            "to": o.to,
            "alpha": "auto" if o.alpha is None else o.alpha,
            "alpha_range": list(_slope_range(o)),
            "max_drift": o.max_drift,
            "sites": o.sites,
            "compensate": o.compensate,
            "shift": o.shift,
            "slope_units": o.slope_units,
            "min_slope": o.min_slope,
            "drift_outputs": [s.original.ref.names[i] for i in s.original.ref.select],
            "max_passes": o.max_passes,
        },
        sites=list(rows.values()),
        drift=search.drift if search else None,
        drift_uncompensated=out.uncompensated,
        audit_summary=audit.summary(),
        notes=s.notes,
        warnings=list(audit.warnings),
    )
    if search is not None:
        report.search = {
            "method": _METHODS[search.gain_source],
            "feasible": search.feasible,
            "predicted_drift": search.predicted_total,
            "steps": [st.to_dict() for st in search.steps],
        }
    report.model_out = out.final.model if out.final is not None else None
    if out.final is not None:
        report.expected_slopes = expected_slopes(out.plans, out.final, o.to)
        report.trainable = trainable_tensors(s.surgeon, rows, out.final.model)
        record_shifts(rows, out.plans, o.to)
    return report


def _write(s: _Session, report: RewriteReport, out: _Outcome, searched: bool) -> None:
    """Publish the variant when it passed (or ``--write-over-budget``); otherwise say why not."""
    o = s.opts
    if o.output is None:
        return
    if out.final is not None and out.search is not None and (report.passed or o.write_over_budget):
        d = publish(
            s.surgeon,
            out.final,
            out.search.drift,
            s.original,
            Path(o.output),
            force=o.force,
            samples=o.audit.samples,
            max_drift=o.max_drift,
            report=report,
            notes=s.notes,
        )
        s.ledger.add("verify written file", d.samples)
        report.drift_verified = d
        return
    if out.final is not None:
        why = (
            "drift over --max-drift (pass --write-over-budget to write it anyway)"
            if not report.drift_ok
            else f"no dead unit got a slope of at least --min-slope {o.min_slope:g}"
        )
    else:
        why = "nothing revived: " + (
            "no site could be recycled (sites[].reason says why)"
            if o.mode in (*RECYCLE_MODES, TRAIN_MODE) and any(r.dead for r in report.sites)
            else "no unit fits the drift budget"
            if searched
            else NO_DEAD_MODEL
        )
    report.output = {"path": str(o.output), "written": False, "reason": why}


def rewrite(
    model: object, data: object = None, *, options: RewriteOptions | None = None, **kw: object
) -> RewriteReport:
    """Rewrite ReLU sites of ``model`` into LeakyReLU/PReLU under a drift budget.

    ``model`` and ``data`` are as for :func:`actaudit.audit`. Keyword arguments are
    :class:`RewriteOptions` fields or :class:`actaudit.api.AuditOptions` fields. The
    rewritten model is in ``report.model_out``; it is written only when ``output`` is
    set and the drift gate passed (or ``force``).
    """
    opts = options or rewrite_options(kw)
    validate(opts)
    check_output(opts.output, opts.force, model)
    t0 = time.perf_counter()
    s = _start(model, data, opts)
    t_audit = time.perf_counter()
    relu = [v for v in s.original.audit.sites if v.info.kind in REWRITABLE_KINDS]
    select_notes: list[str] = []
    selected = _select(relu, opts.sites, select_notes)
    progress = opts.audit.progress
    if progress is not None and hasattr(progress, "label"):
        progress.label = "searching slopes"
    ok, rows = _dry_run(s, relu, selected)
    if opts.mode in (*RECYCLE_MODES, TRAIN_MODE):
        out = _Outcome(*recycle_mode(s, ok, rows, _unit_search))
    elif ok:
        out = _unit_search(s, ok, rows) if s.unit_mode else _site_search(s, ok, rows)
    else:
        _nothing_to_search(s, selected, rows)
        out = _Outcome()
    report = _report(s, rows, out)
    report.notes.extend(select_notes)
    if opts.mode == "learnable" and not getattr(s.surgeon, "bounds_slopes", False):
        report.notes.append(
            f"--mode learnable: a {s.surgeon.output_format} model's slopes are written as in --mode deploy "
            "(TorchScript: constants; torch.export and ONNX: parameters without the bound); the bounded "
            "learnable form needs the eager model (state_dict + --arch, or a pickled module)"
        )
    t_search = time.perf_counter()
    if progress is not None and hasattr(progress, "label"):
        progress.label = "verifying"
    _write(s, report, out, bool(ok))
    if report.search:
        report.search["passes"] = round(s.ledger.passes, 3)
        report.search["passes_by_purpose"] = group_passes(s.ledger.by_purpose())
    if (
        ok and opts.alpha is None and opts.mode not in RECYCLE_MODES
    ):  # the α grid as evidence (evidence.py), when α is to be chosen
        report.evidence = slope_evidence(
            [s.by_name[n] for n in ok],
            lambda plans: s.surgeon.build(plans, "leaky", False),
            s.run_variant,
            total_samples=s.original.ref.samples,
            budget=opts.max_drift,
        )
    report.run = {
        "timings_s": {
            "audit_s": round(t_audit - t0, 4),
            "search_s": round(t_search - t_audit, 4),
            "write_s": round(time.perf_counter() - t_search, 4),
        }
    }
    return report
