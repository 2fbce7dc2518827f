"""``prune(model, data, ...) -> PruneReport``: cut dead units, fold constant ones, verify, write.

Data flows one way: load → one audit pass that also records the original outputs →
constant units per site (from each unit's pre-activation range on the data, or from
interval bounds with ``only_proven``) → a plan over the backend's graph
(:mod:`actaudit.prune.plan`) → edited weights → drift on the calibration data and on a
fresh seeded batch of the same shape and range → written beside the output, reloaded,
checked and re-measured → renamed. The input is only read.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from ..api import AuditOptions, LoadedModel, build_report, data_source, load_model
from ..data import DataSource
from ..errors import EXIT_GATE, ActauditError, CalibrationError, InputError
from ..fileio import sha256_file, staged_model
from ..rewrite.drift import Drift, Reference
from .fresh import data_ranges, fresh_batches, parse_input_ranges
from .interval import propagate, unit_upper
from .plan import Candidate, SitePlan, macs, plan
from .report import PruneReport, SiteRow

DEFAULT_MAX_DRIFT = 1e-5
DEFAULT_FRESH_SEED = 1234
# How far a nearly constant tanh/sigmoid unit may move (output range) to be a fold candidate.
APPROX_SPAN = 1e-3


class VerificationError(ActauditError):
    """The written file did not reload, check or reproduce the measured outputs; nothing was written."""

    exit_code = EXIT_GATE


@dataclass
class PruneOptions:
    output: str | os.PathLike[str] | None = None
    max_drift: float = DEFAULT_MAX_DRIFT
    only_proven: bool = False
    input_range: tuple[str, ...] = ()
    output_format: str | None = None  # ts | pt2 for eager inputs
    fresh_seed: int = DEFAULT_FRESH_SEED
    force: bool = False
    audit: AuditOptions = field(default_factory=AuditOptions)


def options_from(kw: dict[str, Any]) -> PruneOptions:
    mine = {f.name for f in fields(PruneOptions)} - {"audit"}
    theirs = {f.name for f in fields(AuditOptions)}
    unknown = set(kw) - mine - theirs
    if unknown:
        raise TypeError(f"unknown prune option(s): {', '.join(sorted(unknown))}")
    audit = kw.get("audit") or AuditOptions(**{k: v for k, v in kw.items() if k in theirs})
    return PruneOptions(**{k: v for k, v in kw.items() if k in mine}, audit=audit)


def pruner_for(loaded: LoadedModel, opts: PruneOptions) -> Any:
    if loaded.backend == "onnx":
        if opts.output_format:
            raise InputError(
                "--output-format applies to PyTorch eager models; an ONNX model is written as ONNX"
            )
        from ..backends.onnx.prune import OnnxPruner

        return OnnxPruner(loaded.handle)
    from ..backends.torch.prune import TorchPruner

    return TorchPruner(loaded, opts.output, opts.output_format)


def _constants(v: Any, stuck: float) -> tuple[dict[int, float], set[int]]:
    """Units that output one value on every calibration element, and the nearly constant ones."""
    kind, p = v.info.kind, v.info.params
    st = v.stats
    ok = (st.nonfinite == 0) & (st.finite_elements > 0)
    lo_x, hi_x = st.min, st.max
    out: dict[int, float] = {}
    approx: set[int] = set()
    bounds = {
        "relu": (0.0, math.inf, 0.0, None),
        "relu6": (0.0, 6.0, 0.0, 6.0),
        "hardtanh": (p.get("min", -1.0), p.get("max", 1.0), p.get("min", -1.0), p.get("max", 1.0)),
        "clip": (p.get("min", -math.inf), p.get("max", math.inf), p.get("min"), p.get("max")),
    }
    if kind == "hardsigmoid":
        a, b = p.get("alpha", 1.0 / 6.0), p.get("beta", 0.5)
        bounds["hardsigmoid"] = (-b / a, (1.0 - b) / a, 0.0, 1.0)
    if kind in bounds:
        t_lo, t_hi, c_lo, c_hi = bounds[kind]
        for u in np.flatnonzero(ok):
            if c_lo is not None and hi_x[u] <= t_lo:
                out[int(u)] = float(c_lo)
            elif c_hi is not None and lo_x[u] >= t_hi:
                out[int(u)] = float(c_hi)
    elif kind in ("tanh", "sigmoid"):
        f = np.tanh if kind == "tanh" else (lambda z: 1.0 / (1.0 + np.exp(-z)))
        with np.errstate(over="ignore"):
            f_lo = np.asarray(f(lo_x.astype(np.float64))).astype(np.float32)
            f_hi = np.asarray(f(hi_x.astype(np.float64))).astype(np.float32)
        sat = set(v.saturated_units)
        for u in np.flatnonzero(ok):
            if f_lo[u] == f_hi[u]:
                out[int(u)] = float(f_lo[u])
            elif int(u) in sat and float(f_hi[u]) - float(f_lo[u]) <= APPROX_SPAN:
                out[int(u)] = float((float(f_lo[u]) + float(f_hi[u])) / 2)
                approx.add(int(u))
    return out, approx


def prove(
    pruner: Any,
    model: Any,
    ranges: dict[str, tuple[float, float]],
    shapes: dict[str, tuple[int, ...]],
    sites: list[Any],
    stuck: float,
) -> dict[str, list[int] | str]:
    """Per site: units whose pre-activation is at or below the dead threshold for every input in the box."""
    from ..kinds import Activation

    graph = pruner.graph(model, shapes)
    env = propagate(graph, ranges, {n: (1, *s) for n, s in shapes.items()})
    where = pruner.site_values(model, sites)
    out: dict[str, list[int] | str] = {}
    for v in sites:
        name = v.info.name
        got = where.get(name)
        if not isinstance(got, tuple):
            out[name] = got or "not found in the analysed graph"
            continue
        box = env.get(got[0])
        if box is None:
            out[name] = "no bound reaches this site"
            continue
        try:
            low = Activation(v.info.kind, v.info.params).thresholds(stuck)
        except KeyError:
            out[name] = f"no dead threshold for {v.info.kind}"
            continue
        if low.leaky or low.low is None or not math.isfinite(low.low):
            out[name] = []
            continue
        ub = unit_upper(box, v.info.unit_axis)
        if ub.shape[0] != v.info.units:
            out[name] = "bound shape does not match the site's units"
            continue
        out[name] = [int(u) for u in np.flatnonzero(ub <= low.low)]
    return out


def _source_of(batches: list[Any], what: str) -> DataSource:
    return DataSource(lambda: iter(batches), what, total_samples=sum(_n(b) for b in batches))


def _n(b: Any) -> int:
    from ..data import batch_samples

    return batch_samples(b)


def prune(model: Any, data: Any = None, *, options: PruneOptions | None = None, **kw: Any) -> PruneReport:
    """Prune ``model`` on ``data``; keyword arguments are :class:`PruneOptions` or ``AuditOptions`` fields."""
    from ..rewrite.core import check_output

    opts = options or options_from(kw)
    if not opts.max_drift > 0:
        raise InputError(f"--max-drift {opts.max_drift:g}: must be positive")
    if opts.only_proven and not opts.input_range:
        raise InputError(
            "--only-proven needs --input-range",
            hint="e.g. --input-range 0,1, or -inf,inf for weights-only facts",
        )
    check_output(opts.output, opts.force, model)
    t0 = time.perf_counter()
    loaded = load_model(model, opts.audit)
    pruner = pruner_for(loaded, opts)
    source = data_source(data, loaded, opts.audit)
    cap, ref_batches = pruner.capture(source, opts.audit)
    audit = build_report(loaded, source, cap, opts.audit, [], {})
    if not ref_batches:
        raise CalibrationError("the model produced no outputs on the calibration data")
    ref = Reference(ref_batches)
    if ref.norm() == 0:
        raise InputError(
            "the model's outputs are all zero on the calibration data: relative drift is undefined"
        )
    ranges, sizes, kw_names = data_ranges(source, opts.audit.samples)
    shapes = pruner.sample_shapes(ranges)
    base = pruner.original()
    graph = pruner.graph(base, shapes)
    stuck = opts.audit.settings.stuck_fraction
    notes: list[str] = list(pruner.notes)
    proven: dict[str, list[int] | str] = {}
    if opts.input_range:
        box = parse_input_ranges(list(opts.input_range), list(shapes))
        _check_box(ranges, pruner, box, notes)
        proven = prove(pruner, base, box, shapes, audit.sites, stuck)
    where = pruner.site_values(base, audit.sites)
    cands: list[Candidate] = []
    rows: dict[str, SiteRow] = {}
    for v in audit.sites:
        name = v.info.name
        consts, approx = _constants(v, stuck)
        row = SiteRow(name, v.info.op, v.info.kind, v.info.units)
        rows[name] = row
        if opts.input_range:
            pv = proven.get(name, [])
            row.proven = pv if isinstance(pv, list) else None
            if opts.only_proven:
                keep_only = set(pv) if isinstance(pv, list) else set()
                for u in list(consts):
                    if u not in keep_only:
                        row.kept[u] = (
                            "dead or constant on the data, but not proven for every input in the box"
                        )
                        del consts[u]
                approx = set()
        if not consts:
            continue
        got = where.get(name)
        if not isinstance(got, tuple):
            for u in consts:
                row.kept[u] = f"the site is not prunable here: {got or 'not found in the graph'}"
            continue
        x, y = got
        rank = len(v.info.sample_shape) + 1
        cands.append(Candidate(name, x, y, v.info.units, v.info.unit_axis, rank, consts, approx))
    for unc in audit.uncovered:
        notes.append(f"not audited, so not pruned: {unc.name} ({unc.op}): {unc.reason}")

    def build(cs: list[Candidate]) -> tuple[list[SitePlan], Any, Drift]:
        plans, edits = plan(graph, cs)
        new = pruner.apply(base, graph, edits)
        try:
            d = ref.compare(pruner.outputs(new, source, opts.audit.samples))
        except ValueError as e:
            raise CalibrationError(
                f"re-running the calibration data failed: {e}",
                hint="calibration data given in memory must be re-iterable (a list, not a generator)",
            ) from None
        return plans, new, d

    plans, new, drift = build(cands)
    if drift.rel_l2 > opts.max_drift and any(c.approximate for c in cands):
        notes.append(
            f"folding nearly constant tanh/sigmoid units drifted {drift.rel_l2:.3g} > --max-drift: kept them"
        )
        for c in cands:
            for u in c.approximate:
                rows[c.site].kept[u] = (
                    f"nearly constant (output span <= {APPROX_SPAN:g}); folding it exceeds --max-drift"
                )
                c.constants.pop(u, None)
            c.approximate = set()
        plans, new, drift = build([c for c in cands if c.constants])
    for sp in plans:
        r = rows[sp.site]
        r.removed, r.folded, r.producer, r.consumers = sp.removed, sp.folded, sp.producer, sp.consumers
        r.kept.update(sp.kept)
        r.approximate = sp.approximate
    fresh = fresh_batches(ranges, sizes, kw_names, opts.fresh_seed)
    fresh_src = _source_of(fresh, f"fresh uniform batch, seed {opts.fresh_seed}")
    fresh_ref = Reference(list(pruner.outputs(base, fresh_src, None)))
    drift_fresh = fresh_ref.compare(pruner.outputs(new, fresh_src, None))
    if drift_fresh.rel_l2 > opts.max_drift and not opts.only_proven:
        notes.append(
            f"the fresh seeded batch drifted {drift_fresh.rel_l2:.3g} > --max-drift: units that never fired on the "
            "calibration data fire on other inputs of the same range; --only-proven with --input-range removes only "
            "units dead for every input in a box"
        )
    g_after = pruner.graph(new, shapes)
    before = {"parameters": pruner.count_params(base), "macs": macs(graph)}
    after = {"parameters": pruner.count_params(new), "macs": macs(g_after)}
    report = PruneReport(
        model={"path": loaded.path, "format": loaded.fmt, "sha256": loaded.sha256},
        calibration={**audit.calibration},
        options={
            "max_drift": opts.max_drift,
            "only_proven": opts.only_proven,
            "input_range": list(opts.input_range),
            "fresh_seed": opts.fresh_seed,
        },
        sites=list(rows.values()),
        before=before,
        after=after,
        drift=drift,
        drift_fresh=drift_fresh,
        fresh={
            "source": fresh_src.description,
            "samples": fresh_ref.samples,
            "ranges": {r.key: [r.low, r.high] for r in ranges},
        },
        notes=notes,
        warnings=list(audit.warnings),
    )
    report.model_out = new
    t_plan = time.perf_counter()
    changed = any(r.removed or r.folded for r in rows.values())
    if opts.output is not None and changed and (report.passed or opts.force):
        _write_verified(pruner, new, ref, source, opts, report, after)
    elif opts.output is not None:
        report.output = {
            "path": str(opts.output),
            "written": False,
            "reason": "nothing to prune"
            if not changed
            else "drift over --max-drift (pass --force to write anyway)",
        }
    report.run = {
        "timings_s": {"prune_s": round(t_plan - t0, 4), "write_s": round(time.perf_counter() - t_plan, 4)}
    }
    return report


def _check_box(ranges: list[Any], pruner: Any, box: dict[str, tuple[float, float]], notes: list[str]) -> None:
    names = pruner.range_names(ranges)
    for r, name in zip(ranges, names, strict=True):
        lo, hi = box.get(name, (-math.inf, math.inf))
        if r.low < lo or r.high > hi:
            notes.append(
                f"calibration input {name} spans [{r.low:g}, {r.high:g}], outside --input-range [{lo:g}, {hi:g}]: proofs cover the box, not that data"
            )


def _write_verified(
    pruner: Any,
    new: Any,
    ref: Reference,
    source: Any,
    opts: PruneOptions,
    report: PruneReport,
    after: dict[str, int],
) -> None:
    assert opts.output is not None
    out = Path(opts.output)
    with staged_model(pruner, new, report.notes, out, force=opts.force) as tmp:
        try:
            reloaded = pruner.reload(tmp)
        except ActauditError:
            raise
        except Exception as e:
            raise VerificationError(
                f"the pruned model does not reload from disk: {type(e).__name__}: {e}; nothing was written"
            ) from None
        try:
            d = ref.compare(pruner.outputs(reloaded, source, opts.audit.samples))
        except Exception as e:
            raise VerificationError(
                f"the reloaded model failed on the calibration data: {type(e).__name__}: {e}; nothing was written"
            ) from None
        expect = report.drift.rel_l2 if report.drift else 0.0
        if abs(d.rel_l2 - expect) > 1e-6 + 0.05 * max(expect, opts.max_drift):
            raise VerificationError(
                f"the reloaded file drifts {d.rel_l2:.4g}, but the in-memory model measured {expect:.4g}; nothing was written"
            )
        n = pruner.count_params(reloaded)
        if n != after["parameters"]:
            raise VerificationError(
                f"the reloaded file holds {n} parameters, the pruned model {after['parameters']}; nothing was written"
            )
        report.drift_verified = d
    report.output = {
        "path": str(out),
        "written": True,
        "format": pruner.output_format,
        "sha256": sha256_file(out),
        "checks": list(pruner.checks),
    }
    data = getattr(pruner, "written_data", None)  # weights written beside the model (over 2 GB)
    if data is not None:
        report.output["external_data"] = {"path": str(data), "sha256": sha256_file(data)}


def attach_proofs(report: Any, loaded: LoadedModel, source: DataSource, opts: AuditOptions) -> None:
    """Mark ``proven_dead_units`` on an audit report's sites from interval bounds over the input box.

    A proof that contradicts the data (a proven unit that fired on a calibration sample
    inside the box) is a bug of the analysis: an internal error, never a silent report.
    """
    pruner = pruner_for(loaded, PruneOptions(audit=opts))
    pruner.prepare(source, opts.samples)
    ranges, _, _ = data_ranges(source, opts.samples)
    shapes = pruner.sample_shapes(ranges)
    box = parse_input_ranges(list(opts.input_range), list(shapes))
    notes: list[str] = []
    _check_box(ranges, pruner, box, notes)
    proofs = prove(pruner, pruner.original(), box, shapes, report.sites, opts.settings.stuck_fraction)
    inside = not notes
    report.warnings.extend(notes)
    for v in report.sites:
        got = proofs.get(v.info.name, "not analysed")
        if isinstance(got, str):
            v.proven_dead_units, v.proof_note = [], got
            continue
        v.proven_dead_units = got
        fired = sorted(set(got) - set(v.dead_units))
        if fired and inside:
            raise RuntimeError(
                f"interval bounds proved units {fired[:8]} of {v.info.name} dead on the box, but they fired on "
                "calibration data inside it: the bound propagation is unsound here"
            )
