"""``rewrite(model, data, ...) -> RewriteReport``: audit, choose slopes, rewrite, verify, write.

Data flows one way: load → one audit pass that also records the original outputs →
select ReLU / ReLU6 sites → search slopes (per dead unit by default, :mod:`.units`; per
site with ``--to leaky`` / ``--slope-units all``, :mod:`.search`) on rewritten variants → write to a temporary file
beside the output → reload it from disk, check it and re-measure its drift → rename.
Any failure after the temporary file exists removes it; the input is only read.
"""

from __future__ import annotations

import fnmatch
import math
import os
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from ..api import AuditOptions, LoadedModel, build_report, data_source, load_model
from ..errors import EXIT_GATE, ActauditError, CalibrationError, InputError
from ..fileio import sha256_file, staged_model
from .drift import Drift, Ledger, Reference
from .report import RewriteReport, SiteRewrite
from .search import DEFAULT_RANGE, SearchResult, SearchSite, auto_slopes, fixed_slopes

DEFAULT_MAX_DRIFT = 0.01
DEFAULT_MAX_PASSES = 20.0
DEFAULT_MIN_SLOPE = 0.01  # the audit's stuck fraction: a smaller slope still counts as dead
TARGETS = ("leaky", "prelu")
SHIFTS = ("exact", "fold", "none")
REWRITABLE_KINDS = ("relu", "relu6")
OUTPUT_FORMATS = ("ts", "pt2")
_TS_SUFFIXES = (".ts", ".pt", ".pth", ".jit", ".torchscript")


class VerificationError(ActauditError):
    """The written file did not reload, check or reproduce the measured outputs; nothing was written."""

    exit_code = EXIT_GATE


@dataclass
class RewriteOptions:
    """Every knob of a rewrite; audit knobs (calibration, loading) live in ``audit``."""

    alpha: float | None = None  # None: search ("auto")
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


def options_from(kw: dict[str, Any]) -> RewriteOptions:
    mine = {f.name for f in fields(RewriteOptions)} - {"audit"}
    theirs = {f.name for f in fields(AuditOptions)}
    unknown = set(kw) - mine - theirs
    if unknown:
        raise TypeError(f"unknown rewrite option(s): {', '.join(sorted(unknown))}")
    audit = kw.get("audit") or AuditOptions(**{k: v for k, v in kw.items() if k in theirs})
    return RewriteOptions(**{k: v for k, v in kw.items() if k in mine}, audit=audit)


def validate(opts: RewriteOptions) -> None:
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


def check_output(output: str | os.PathLike[str] | None, force: bool, model: Any) -> None:
    """Refuse before the (slow) run, not after it."""
    if output is None:
        return
    out = Path(output)
    if isinstance(model, (str, os.PathLike)):
        src = Path(model)
        if src.exists() and (out.resolve() == src.resolve() or (out.exists() and os.path.samefile(src, out))):
            raise InputError(
                f"output {out} is the input model", hint="the input is never modified; write to another path"
            )
    if out.is_dir():
        raise InputError(f"output {out} is a directory", hint="give a file path")
    if out.exists() and not force:
        raise InputError(f"output {out} already exists", hint="pass --force to overwrite it")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"output directory {parent} does not exist", hint="create it first")


def _writer(loaded: LoadedModel, opts: RewriteOptions, notes: list[str]) -> str:
    if loaded.backend == "onnx":
        if opts.output_format:
            raise InputError(
                "--output-format applies to PyTorch eager models; an ONNX model is written as ONNX"
            )
        return "onnx"
    fmt = loaded.fmt
    want = opts.output_format
    suffix = Path(opts.output).suffix.lower() if opts.output else ""
    if fmt == "torchscript":
        if want == "pt2":
            raise InputError(
                "a TorchScript model is rewritten as TorchScript; --output-format pt2 needs an eager model"
            )
        return "ts"
    if fmt == "torch.export":
        if want == "ts":
            raise InputError(
                "a torch.export program is rewritten as .pt2; --output-format ts needs an eager model"
            )
        return "pt2"
    if want is None and suffix == ".pt2":
        want = "pt2"
    if fmt == "state_dict":
        if want is None and suffix in _TS_SUFFIXES:
            want = "ts"
        if want is None:
            if opts.output is None:
                return "ts"
            raise InputError(
                f"a state_dict cannot carry a new activation, and {opts.output} does not say which format to write",
                hint="pass --output-format ts|pt2, or name the output .ts or .pt2",
            )
        notes.append(
            "a state_dict holds weights only and cannot carry a new activation: wrote "
            + ("TorchScript" if want == "ts" else "a torch.export program (.pt2)")
        )
        return want
    return want or "pickle"


def _surgeon(loaded: LoadedModel, writer: str) -> Any:
    if loaded.backend == "onnx":
        from ..backends.onnx.surgery import OnnxSurgeon

        return OnnxSurgeon(loaded.handle)
    from ..backends.torch.surgery import TorchSurgeon

    return TorchSurgeon(loaded.handle, writer)


def _select(relu_sites: list[Any], spec: str) -> list[Any]:
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
    chosen = [
        v
        for v in relu_sites
        if any(
            fnmatch.fnmatchcase(v.info.name, g) or fnmatch.fnmatchcase(v.info.name.split("#")[0], g)
            for g in globs
        )
    ]
    if not chosen:
        names = ", ".join(v.info.name for v in relu_sites[:12]) or "(none)"
        raise InputError(f"--sites {spec!r} matches no ReLU site", hint=f"ReLU sites are: {names}")
    return chosen


def rewrite(
    model: Any, data: Any = None, *, options: RewriteOptions | None = None, **kw: Any
) -> RewriteReport:
    """Rewrite ReLU sites of ``model`` into LeakyReLU/PReLU under a drift budget.

    ``model`` and ``data`` are as for :func:`actaudit.audit`. Keyword arguments are
    :class:`RewriteOptions` fields or :class:`actaudit.api.AuditOptions` fields. The
    rewritten model is in ``report.model_out``; it is written only when ``output`` is
    set and the drift gate passed (or ``force``).
    """
    opts = options or options_from(kw)
    validate(opts)
    check_output(opts.output, opts.force, model)
    t0 = time.perf_counter()
    notes: list[str] = []
    loaded = load_model(model, opts.audit)
    writer = _writer(loaded, opts, notes)
    surgeon = _surgeon(loaded, writer)
    source = data_source(data, loaded, opts.audit)
    cap, ref_batches = surgeon.capture(source, opts.audit)
    t_audit = time.perf_counter()
    audit = build_report(loaded, source, cap, opts.audit, [], {})
    if not ref_batches:
        raise CalibrationError("the model produced no outputs on the calibration data")
    names = getattr(surgeon, "output_names", None)
    ref = Reference(ref_batches, names, _drift_select(opts.drift_outputs, names, ref_batches))
    if not any(len(b) for b in ref.batches):
        raise InputError("the model has no floating-point outputs: drift cannot be measured")
    ynorm = ref.norm()
    if ynorm == 0:
        raise InputError(
            "the model's outputs are all zero on the calibration data: relative drift is undefined"
        )
    ledger = Ledger(ref.samples)
    if getattr(surgeon, "capture_passes", 1) == 2:
        ledger.add("audit", ref.samples)
        ledger.add("reference outputs", ref.samples)
    else:
        ledger.add("audit + reference outputs", ref.samples)

    relu = [v for v in audit.sites if v.info.kind in REWRITABLE_KINDS]
    selected = _select(relu, opts.sites)
    lo, hi = opts.alpha_range
    lo = max(lo, min(opts.min_slope, hi))
    from .plan import SitePlan, float32_up

    fold = opts.shift == "fold"
    unit_mode = opts.to == "prelu" and opts.slope_units == "dead" and opts.alpha is None
    progress = opts.audit.progress
    if progress is not None and hasattr(progress, "label"):
        progress.label = "searching slopes"

    def plan(v: Any, alpha: float, unit: dict[int, float] | None = None) -> Any:
        vec = None
        if unit is not None:
            vec = np.zeros(v.info.units, dtype=np.float64)
            for u, a in unit.items():
                vec[u] = a
            vec = float32_up(vec).astype(np.float64)
        return SitePlan(
            v.info.name,
            float(alpha),
            units=v.info.units,
            unit_axis=v.info.unit_axis,
            sample_shape=tuple(v.info.sample_shape),
            neg_mean=v.stats.neg_mean(),
            only_units=list(v.dead_units) if opts.slope_units == "dead" else None,
            unit_slopes=vec,
            exact_shift=opts.shift == "exact",
            kind=v.info.kind,
        )

    by_name = {v.info.name: v for v in selected}
    dry = surgeon.build([plan(v, hi) for v in selected], opts.to, False) if selected else None
    ok = [n for n in by_name if dry is not None and n in dry.rewritten]
    if unit_mode:
        ok = [n for n in ok if by_name[n].dead_units]
    rows: dict[str, SiteRewrite] = {}
    for v in relu:
        n = v.info.name
        row = SiteRewrite(n, v.info.op, v.info.units, v.info.unit_axis, len(v.dead_units), "unchanged")
        if n in by_name and dry is not None:
            if n in dry.rewritten:
                row.status, row.how = "rewritten", dry.rewritten[n]
            else:
                row.status, row.reason = "skipped", dry.skipped.get(n, "not rewritten")
        rows[n] = row
    if dry is not None:
        notes.extend(dry.notes)
    for u in audit.uncovered:
        notes.append(f"not audited, so not rewritten: {u.name} ({u.op}): {u.reason}")

    def run_variant(res: Any, samples: int | None, purpose: str) -> Drift:
        nb = ref.batches_for(samples)
        try:
            d = ref.compare(surgeon.outputs(res.model, source, opts.audit.samples, nb), nb)
        except ValueError as e:
            raise CalibrationError(
                f"re-running the calibration data failed: {e}",
                hint="calibration data given in memory must be re-iterable (a list, not a generator)",
            ) from None
        ledger.add(purpose, d.samples)
        if progress is not None:
            progress(d.samples)
        return d

    def measure_with(compensate: bool) -> Any:
        def measure(slopes: dict[str, float], samples: int | None, purpose: str) -> Drift:
            res = surgeon.build([plan(by_name[n], a) for n, a in slopes.items()], opts.to, compensate)
            return run_variant(res, samples, purpose)

        return measure

    def unit_plans(unit_slopes: dict[str, dict[int, float]]) -> list[Any]:
        return [plan(by_name[n], max(us.values()), us) for n, us in unit_slopes.items() if us]

    def measure_units(unit_slopes: dict[str, dict[int, float]], samples: int | None, purpose: str) -> Drift:
        return run_variant(surgeon.build(unit_plans(unit_slopes), opts.to, False), samples, purpose)

    search: SearchResult | None = None
    final = None
    d_nocomp = None
    chosen_units: dict[str, dict[int, float]] = {}
    over_budget: Any = None
    if ok and unit_mode:
        from .units import UnitSite, centered_energy, search_units

        usites = []
        for n in ok:
            v = by_name[n]
            dead = list(v.dead_units)
            st = v.stats
            e = centered_energy(st.neg_sq, st.neg_mean(), st.finite_elements)[dead] / (ynorm**2)
            usites.append(UnitSite(n, dead, e))
        passes = max(1.0, opts.max_passes - ledger.passes - (1.0 if opts.output else 0.0))
        ures = search_units(
            usites,
            measure_units,
            budget=opts.max_drift,
            total_samples=ref.samples,
            passes=passes,
            min_slope=opts.min_slope,
            cap=hi,
        )
        chosen_units = ures.slopes
        if not ures.feasible and ures.best_infeasible is not None:
            over_budget = ures.best_infeasible
        use = chosen_units if ures.feasible else (over_budget[0] if over_budget else {})
        site_alpha = {n: max(us.values()) for n, us in use.items() if us}
        drift = ures.drift
        search = SearchResult(
            slopes=site_alpha,
            drift=drift,
            feasible=ures.feasible,
            gains=ures.gains,
            gain_source=ures.gain_source,
            predicted={},
            predicted_total=ures.predicted_total,
            steps=ures.steps,
        )
        final = surgeon.build(unit_plans(use), opts.to, False) if use else None
        if final is not None:
            notes.extend(x for x in final.notes if x not in notes)
        for n in ok:
            r = rows[n]
            us = use.get(n, {})
            if not us:
                r.status, r.how = "unchanged", None
                r.reason = "no dead unit of this site fits the drift budget"
                continue
            r.alpha = max(us.values())
            r.alpha_min = min(us.values())
            r.unit_slopes = {int(u): float(float32_up(np.array([a]))[0]) for u, a in sorted(us.items())}
            r.revived = sum(1 for a in us.values() if a >= opts.min_slope)
            r.gain = ures.gains.get(n)
            if final is not None and n in final.skipped:
                r.status, r.reason = "skipped", final.skipped[n]
        if not ures.feasible:
            total_dead = sum(len(by_name[n].dead_units) for n in ok)
            what = (
                f"the cheapest change measured drifts {over_budget[1].rel_l2:.4g} "
                f"({sum(len(x) for x in over_budget[0].values())} unit(s) at slope {opts.min_slope:g}: "
                + ", ".join(f"{n} unit {u}" for n, us in over_budget[0].items() for u in list(us)[:3])
                + ")"
                if over_budget
                else "no variant could be measured within the pass budget"
            )
            notes.append(
                f"no dead unit fits --max-drift {opts.max_drift:g}: {what}; of {total_dead} dead unit(s) none was "
                "revived. What would fit: a larger --max-drift (at least the drift above), a smaller --min-slope "
                "(the unit then still counts as dead), or --drift-outputs to measure only the outputs you care about"
            )
    elif ok:
        ssites = [
            SearchSite(n, max(1.0, float(len(by_name[n].dead_units))), _energy(by_name[n], opts) / ynorm)
            for n in ok
        ]
        reserve = 1.0 + (1.0 if fold else 0.0) + (1.0 if opts.output else 0.0)
        passes = max(1.0, opts.max_passes - ledger.passes - reserve)
        measure = measure_with(fold)
        if opts.alpha is None:
            search = auto_slopes(
                ssites, measure, budget=opts.max_drift, total_samples=ref.samples, passes=passes, lo=lo, hi=hi
            )
        else:
            search = fixed_slopes(
                ssites, opts.alpha, measure, total_samples=ref.samples, passes=passes, budget=opts.max_drift
            )
        final = surgeon.build([plan(by_name[n], a) for n, a in search.slopes.items()], opts.to, fold)
        notes.extend(x for x in final.notes if x not in notes)
        if fold:
            d_nocomp = measure_with(False)(search.slopes, None, "without compensation")
            if d_nocomp.rel_l2 < search.drift.rel_l2:
                notes.append(
                    f"compensation made the drift worse here ({search.drift.rel_l2:.4g} with, {d_nocomp.rel_l2:.4g} "
                    "without): folds next to zero padding over-correct at the borders; consider running without --compensate"
                )
        stuck = opts.audit.settings.stuck_fraction
        for n in ok:
            r = rows[n]
            r.alpha = search.slopes[n]
            r.gain = search.gains.get(n)
            r.predicted_drift = search.predicted.get(n)
            r.measured_drift = search.site_drift.get(n)
            r.revived = len(by_name[n].dead_units) if r.alpha >= opts.min_slope else 0
            if n in final.skipped:  # should not happen after the dry run
                r.status, r.reason = "skipped", final.skipped[n]
            if fold:
                r.compensation = (
                    final.compensated.get(n)
                    or f"not compensated: {final.not_compensated.get(n, 'no linear op found')}"
                )
        if opts.shift == "exact":
            for n in ok:
                rows[n].compensation = "exact shift after the activation"
        low = [n for n in ok if search.slopes[n] < stuck]
        if low:
            notes.append(
                f"{len(low)} site(s) got α below the stuck fraction {stuck:g} ({', '.join(low[:5])}): a unit with so "
                "small a slope still counts as dead in an audit, though it does get a gradient"
            )
        if search.gain_source == "probe" and not search.site_drift and len(ok) > 1:
            notes.append("per-site drift was not measured alone: the pass budget was spent on the search")
    elif not selected or (unit_mode and not any(by_name[n].dead_units for n in by_name)):
        notes.append(
            "no ReLU / ReLU6 site has dead units: nothing to revive (use --sites all --slope-units all to add "
            "slopes anyway)"
            if opts.sites == "dead" or unit_mode
            else "no site selected"
        )
    else:
        why = "; ".join(f"{r.name}: {r.reason}" for r in rows.values() if r.status == "skipped")
        raise InputError(f"none of the selected ReLU sites can be rewritten: {why}")

    report = RewriteReport(
        model={"path": loaded.path, "format": loaded.fmt, "sha256": loaded.sha256},
        calibration={**audit.calibration},
        options={
            "to": opts.to,
            "alpha": "auto" if opts.alpha is None else opts.alpha,
            "alpha_range": [lo, hi],
            "max_drift": opts.max_drift,
            "sites": opts.sites,
            "compensate": opts.compensate,
            "shift": opts.shift,
            "slope_units": opts.slope_units,
            "min_slope": opts.min_slope,
            "drift_outputs": [ref.names[i] for i in ref.select],
            "max_passes": opts.max_passes,
        },
        sites=list(rows.values()),
        drift=search.drift if search else None,
        drift_uncompensated=d_nocomp,
        audit_summary=audit.summary(),
        notes=notes,
        warnings=list(audit.warnings),
    )
    if search is not None:
        report.search = {
            "method": {
                "probe": "per-site probes + confirmation",
                "statistics": "statistics + confirmation",
                "fixed": "fixed α",
            }[search.gain_source],
            "feasible": search.feasible,
            "predicted_drift": search.predicted_total,
            "steps": [s.to_dict() for s in search.steps],
        }
    report.model_out = final.model if final is not None else None
    if final is not None:
        final_plans = (
            unit_plans(chosen_units if chosen_units else (over_budget[0] if over_budget else {}))
            if unit_mode
            else [plan(by_name[n], a) for n, a in search.slopes.items()]
            if search
            else []
        )
        report.expected_slopes = _expected_slopes(final_plans, final, opts.to)
    t_search = time.perf_counter()
    if progress is not None and hasattr(progress, "label"):
        progress.label = "verifying"
    if opts.output is not None and final is not None and (report.passed or opts.write_over_budget):
        _write_verified(surgeon, final, search, ref, source, opts, ledger, report, notes)
    elif opts.output is not None and final is not None:
        why = (
            "drift over --max-drift (pass --write-over-budget to write it anyway)"
            if not report.drift_ok
            else f"no dead unit got a slope of at least --min-slope {opts.min_slope:g}"
        )
        report.output = {"path": str(opts.output), "written": False, "reason": why}
    elif opts.output is not None:
        report.output = {
            "path": str(opts.output),
            "written": False,
            "reason": "nothing revived: "
            + ("no unit fits the drift budget" if ok else "no dead unit to revive"),
        }
    if report.search:
        report.search["passes"] = round(ledger.passes, 3)
        report.search["passes_by_purpose"] = _group(ledger.by_purpose())
    report.run = {
        "timings_s": {
            "audit_s": round(t_audit - t0, 4),
            "search_s": round(t_search - t_audit, 4),
            "write_s": round(time.perf_counter() - t_search, 4),
        }
    }
    return report


def _energy(v: Any, opts: RewriteOptions) -> float:
    """sqrt(Σ min(z, 0)²) over the units that get a slope: the first-order size of the change."""
    sq = np.asarray(v.stats.neg_sq, dtype=np.float64)
    if opts.slope_units == "dead":
        sq = sq[list(v.dead_units)]
    return math.sqrt(float(sq.sum()))


def _group(by: dict[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in by.items():
        key = k.split(" ", 1)[0] if k.startswith(("probe ", "attribute ")) else k
        out[key] = round(out.get(key, 0.0) + v, 3)
    return out


def _write_verified(
    surgeon: Any,
    final: Any,
    search: Any,
    ref: Reference,
    source: Any,
    opts: RewriteOptions,
    ledger: Ledger,
    report: RewriteReport,
    notes: list[str],
) -> None:
    assert opts.output is not None
    out = Path(opts.output)
    with staged_model(surgeon, final.model, notes, out, force=opts.force) as tmp:
        try:
            reloaded = surgeon.reload(tmp)
        except ActauditError:
            raise
        except Exception as e:
            raise VerificationError(
                f"the rewritten model does not reload from disk: {type(e).__name__}: {e}; nothing was written"
            ) from None
        try:
            d = ref.compare(surgeon.outputs(reloaded, source, opts.audit.samples, None))
        except Exception as e:
            raise VerificationError(
                f"the reloaded model failed on the calibration data: {type(e).__name__}: {e}; nothing was written"
            ) from None
        ledger.add("verify written file", d.samples)
        expect = search.drift.rel_l2
        if abs(d.rel_l2 - expect) > 1e-6 + 0.02 * max(expect, opts.max_drift):
            raise VerificationError(
                f"the reloaded file drifts {d.rel_l2:.4g} from the original, but the in-memory rewrite measured {expect:.4g}; nothing was written"
            )
        written = surgeon.written_slopes(reloaded)
        got = _minus(_flat_slopes(written), _flat_slopes(surgeon.original_slopes()))
        want = sorted(report.expected_slopes)
        if not _same_multiset(got, want):
            raise VerificationError(
                f"the reloaded file's slopes {got[:8]} do not match the chosen ones {want[:8]}; nothing was written"
            )
        if not surgeon.trainable(reloaded) and surgeon.trainable(surgeon.original()):
            notes.append("the reloaded model's parameters are not all trainable, though the input's were")
        frozen: list[str] = getattr(surgeon, "frozen_parameters", lambda m: [])(reloaded)
        if frozen:
            report.warnings.append(
                f"{len(frozen)} parameter(s) in the written file are frozen (requires_grad=False), e.g. "
                f"{', '.join(frozen[:4])}: revived units get a gradient, but frozen weights feeding them will not "
                "train until you unfreeze them (module.requires_grad_(True))"
            )
        report.drift_verified = d
    report.output = {
        "path": str(out),
        "written": True,
        "format": surgeon.output_format,
        "sha256": sha256_file(out),
        "checks": list(getattr(surgeon, "checks", ("fresh load from disk", "calibration re-run"))),
        "slopes_in_file": [
            {
                "site": s,
                "op": op,
                "slope": slope if not isinstance(slope, list) else f"{len(slope)} per-unit values",
            }
            for s, op, slope in written
        ],
    }
    data = getattr(surgeon, "written_data", None)  # weights written beside the model (over 2 GB)
    if data is not None:
        report.output["external_data"] = {"path": str(data), "sha256": sha256_file(data)}


def _key(values: Any) -> tuple[float, ...]:
    return tuple(float(f"{float(x):.5g}") for x in np.asarray(values, dtype=np.float64).reshape(-1))


def _flat_slopes(written: list[tuple[str, str, Any]]) -> list[tuple[float, ...]]:
    """One key per slope-carrying node of a file: its slope(s), rounded."""
    return [
        _key(slope if isinstance(slope, list) else [slope]) for _, _op, slope in written if slope is not None
    ]


def _minus(a: list[Any], b: list[Any]) -> list[Any]:
    """Multiset difference: the slopes the rewrite added (the model may have had leaky units already)."""
    rest = list(a)
    for x in b:
        if x in rest:
            rest.remove(x)
    return sorted(rest)


def _expected_slopes(plans: list[Any], final: Any, to: str) -> list[tuple[float, ...]]:
    """One key per rewritten site (a site may be several nodes, or share one: compared as sets)."""
    from .plan import float32_up

    out = []
    for p in plans:
        if p.name not in final.rewritten:
            continue
        if to == "leaky":
            out.append(_key([p.alpha]))
        elif p.per_unit() or p.exact_shift or p.cap is not None:
            out.append(_key(float32_up(p.slopes() if p.unit_slopes is not None else p.slopes(p.alpha))))
        else:
            out.append(_key(p.slopes(p.alpha)))
    return sorted(out)


def _drift_select(spec: str | None, names: list[str] | None, batches: list[Any]) -> list[int] | None:
    """Indices of the outputs named in ``--drift-outputs`` (all when None)."""
    if not spec:
        return None
    n_out = len(batches[0]) if batches else 0
    have = list(names) if names is not None and len(names) == n_out else [f"output{i}" for i in range(n_out)]
    want = [w.strip() for w in spec.split(",") if w.strip()]
    missing = [w for w in want if w not in have]
    if missing or not want:
        raise InputError(
            f"--drift-outputs {spec!r}: no floating-point output named {', '.join(missing) or '(empty)'}",
            hint=f"the model's outputs are: {', '.join(have)}",
        )
    return [have.index(w) for w in want]


def _same_multiset(got: list[Any], want: list[Any]) -> bool:
    # A module called at several sites with one slope appears once in the file; compare the sets then.
    if got == want:
        return True
    return sorted(set(got)) == sorted(set(want)) and len(got) <= len(want)
