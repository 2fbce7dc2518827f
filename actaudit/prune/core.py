"""``prune(model, data, ...) -> PruneReport``: cut dead units, fold constant ones, verify, write.

Data flows one way: load → one audit pass that also records the original outputs →
constant units per site (from each unit's pre-activation range on the data, or from
interval bounds with ``only_proven``) → a plan over the backend's graph
(:mod:`actaudit.edit.cuts`) → edited weights → drift on the calibration data and on a
fresh seeded batch of the same shape and range → written beside the output, reloaded,
checked and re-measured → renamed. The input is only read.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..assemble import model_section
from ..backends.base import Pruner
from ..data import DataSource, batch_samples
from ..edit.cuts import Candidate, Edits, SiteCut, macs, macs_after, plan
from ..edit.drift import Drift, Reference
from ..edit.graph import Graph, release_values
from ..edit.ranges import InputRange, parse_input_ranges
from ..errors import InputError
from ..loading import load_model
from ..options import AuditOptions
from ..variants import (
    Original,
    VerificationError,
    check_output,
    measure_original,
    options_from,
    variant_drift,
    write_verified,
)
from ..verdicts import SiteVerdict
from .fresh import data_ranges, fresh_batches
from .proofs import check_box, prove
from .report import PruneReport, SiteRow

__all__ = ["PruneOptions", "VerificationError", "prune"]

DEFAULT_MAX_DRIFT = 1e-5
DEFAULT_FRESH_SEED = 1234
# How far a nearly constant tanh/sigmoid unit may move (output range) to be a fold candidate.
APPROX_SPAN = 1e-3


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


def prune_options(kw: dict[str, object]) -> PruneOptions:
    return options_from(PruneOptions, kw, "prune")


def _constants(v: SiteVerdict, stuck: float) -> tuple[dict[int, float], set[int]]:
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


@dataclass
class _Session:
    """A prune in progress: the original measured once, its pruner, and the graph it is planned on."""

    opts: PruneOptions
    original: Original
    pruner: Pruner
    base: object  # the original model, as the pruner edits it
    graph: Graph
    shapes: dict[str, tuple[int, ...]]
    ranges: list[InputRange]
    sizes: list[int]  # the calibration batches' sizes, which the fresh batch repeats
    kw_names: list[str]
    notes: list[str] = field(default_factory=list)
    rows: dict[str, SiteRow] = field(default_factory=dict)
    edits: Edits = field(default_factory=Edits)  # the chosen variant's

    def variant(self, cs: list[Candidate]) -> tuple[list[SiteCut], object, Drift]:
        """The plan for ``cs``, the edited model, and its drift on the calibration data."""
        plans, edits = plan(self.graph, cs)
        self.edits = edits
        new = self.pruner.apply(self.base, self.graph, edits)
        produced = self.pruner.outputs(new, self.original.source, self.opts.audit.samples)
        return plans, new, variant_drift(self.original.ref, produced)


def _start(model: object, data: object, opts: PruneOptions) -> _Session:
    loaded = load_model(model, opts.audit)
    out = Path(opts.output) if opts.output is not None else None
    pruner = loaded.handle.pruner(out, opts.output_format)
    original = measure_original(loaded, data, opts.audit)
    pruner.prepare(original.source, opts.audit.samples)
    ranges, sizes, kw_names = data_ranges(original.source, opts.audit.samples)
    shapes = pruner.sample_shapes(ranges)
    base = pruner.original()
    graph = pruner.graph(base, shapes)
    return _Session(opts, original, pruner, base, graph, shapes, ranges, sizes, kw_names, list(pruner.notes))


def _candidates(s: _Session) -> list[Candidate]:
    """Per site: its constant units (proven ones only with ``--only-proven``) where the graph can cut them."""
    o, audit = s.opts, s.original.audit
    stuck = o.audit.settings.stuck_fraction
    tiers = _tiers(s, stuck) if o.input_range else {}
    proven = tiers.get("linear", {})
    where = s.pruner.site_values(s.base, audit.sites)
    cands: list[Candidate] = []
    for v in audit.sites:
        name = v.info.name
        consts, approx = _constants(v, stuck)
        row = s.rows[name] = SiteRow(name, v.info.op, v.info.kind, v.info.units)
        row.data_dead = sorted(u for u, c in consts.items() if c == 0 and u not in approx)
        if o.input_range:
            pv = proven.get(name, [])
            row.proven = pv if isinstance(pv, list) else None
            for tier, attr in (("weights", "weights_dead"), ("interval", "proven_interval")):
                tv = tiers[tier].get(name, [])
                setattr(row, attr, tv if isinstance(tv, list) else None)
            if o.only_proven:
                keep_only = set(pv) if isinstance(pv, list) else set()
                for u in [u for u in consts if u not in keep_only]:
                    row.kept[u] = "dead or constant on the data, but not proven for every input in the box"
                    del consts[u]
                approx = set()
        if not consts:
            continue
        got = where.get(name)
        if not isinstance(got, tuple):
            for u in consts:
                row.kept[u] = f"the site is not prunable here: {got or 'not found in the graph'}"
            continue
        rank = len(v.info.sample_shape) + 1
        cands.append(Candidate(name, got[0], got[1], v.info.units, v.info.unit_axis, rank, consts, approx))
    for unc in audit.uncovered:
        s.notes.append(f"not audited, so not pruned: {unc.name} ({unc.op}): {unc.reason}")
    return cands


def _tiers(s: _Session, stuck: float) -> dict[str, dict[str, list[int] | str]]:
    """Proofs per tier: dead by the weights alone (an unbounded input), by intervals and by linear
    relaxations over the box (the one the cut uses)."""
    sites = s.original.audit.sites
    box = parse_input_ranges(list(s.opts.input_range), list(s.shapes))
    check_box(s.ranges, s.pruner, box, s.notes)
    unbounded = dict.fromkeys(s.shapes, (-math.inf, math.inf))
    return {
        "weights": prove(s.pruner, s.base, unbounded, s.shapes, sites, stuck, "interval", s.graph),
        "interval": prove(s.pruner, s.base, box, s.shapes, sites, stuck, "interval", s.graph),
        "linear": prove(s.pruner, s.base, box, s.shapes, sites, stuck, "linear", s.graph),
    }


def _choose(s: _Session, cands: list[Candidate]) -> tuple[object, Drift]:
    """The variant cutting every candidate; without the nearly constant units when they cost the budget."""
    plans, new, drift = s.variant(cands)
    if drift.rel_l2 > s.opts.max_drift and any(c.approximate for c in cands):
        s.notes.append(
            f"folding nearly constant tanh/sigmoid units drifted {drift.rel_l2:.3g} > --max-drift: kept them"
        )
        for c in cands:
            for u in c.approximate:
                s.rows[c.site].kept[u] = (
                    f"nearly constant (output span <= {APPROX_SPAN:g}); folding it exceeds --max-drift"
                )
                c.constants.pop(u, None)
            c.approximate = set()
        plans, new, drift = s.variant([c for c in cands if c.constants])
    for sp in plans:
        r = s.rows[sp.site]
        r.removed, r.folded, r.producer, r.consumers = sp.removed, sp.folded, sp.producer, sp.consumers
        r.kept.update(sp.kept)
        r.approximate = sp.approximate
    return new, drift


def _fresh_drift(s: _Session, new: object) -> tuple[Drift, DataSource, Reference]:
    """The drift on a seeded uniform batch of the data's shapes and ranges: units that never fired may on it."""
    o = s.opts
    fresh = fresh_batches(s.ranges, s.sizes, s.kw_names, o.fresh_seed)
    src = DataSource(
        lambda: iter(fresh),
        f"fresh uniform batch, seed {o.fresh_seed}",
        total_samples=sum(batch_samples(b) for b in fresh),
    )
    ref = Reference(list(s.pruner.outputs(s.base, src, None)))
    d = ref.compare(s.pruner.outputs(new, src, None))
    if d.rel_l2 > o.max_drift and not o.only_proven:
        s.notes.append(
            f"the fresh seeded batch drifted {d.rel_l2:.3g} > --max-drift: units that never fired on the "
            "calibration data fire on other inputs of the same range; --only-proven with --input-range removes only "
            "units dead for every input in a box"
        )
    return d, src, ref


def _report(s: _Session, new: object, drift: Drift) -> PruneReport:
    o = s.opts
    drift_fresh, fresh_src, fresh_ref = _fresh_drift(s, new)
    return PruneReport(
        model=model_section(s.original.loaded),
        calibration={**s.original.audit.calibration},
        options={
            "max_drift": o.max_drift,
            "only_proven": o.only_proven,
            "input_range": list(o.input_range),
            "fresh_seed": o.fresh_seed,
        },
        sites=list(s.rows.values()),
        before={"parameters": s.pruner.count_params(s.base), "macs": macs(s.graph)},
        after={"parameters": s.pruner.count_params(new), "macs": macs_after(s.graph, s.edits)},
        drift=drift,
        drift_fresh=drift_fresh,
        fresh={
            "source": fresh_src.description,
            "samples": fresh_ref.samples,
            "ranges": {r.key: [r.low, r.high] for r in s.ranges},
        },
        notes=s.notes,
        warnings=list(s.original.audit.warnings),
    )


def _write(s: _Session, new: object, report: PruneReport) -> object | None:
    """Publish the pruned model once its reloaded copy reproduces the drift and the parameter count;
    the reloaded model, or None when nothing was written."""
    o = s.opts
    if o.output is None:
        return None
    changed = any(r.removed or r.folded for r in s.rows.values())
    if not changed or not (report.passed or o.force):
        reason = (
            "nothing to prune" if not changed else "drift over --max-drift (pass --force to write anyway)"
        )
        report.output = {"path": str(o.output), "written": False, "reason": reason}
        return None
    want = report.after["parameters"]

    def same_size(reloaded: object) -> None:
        n = s.pruner.count_params(reloaded)
        if n != want:
            raise VerificationError(
                f"the reloaded file holds {n} parameters, the pruned model {want}; nothing was written"
            )

    expect = report.drift.rel_l2 if report.drift else 0.0
    done = write_verified(
        s.pruner,
        new,
        s.original,
        Path(o.output),
        force=o.force,
        notes=report.notes,
        rerun=lambda m: s.pruner.outputs(m, s.original.source, o.audit.samples),
        expect=expect,
        tolerance=0.05 * max(expect, o.max_drift),
        what="pruned",
        check=same_size,
    )
    report.drift_verified = done.drift
    report.output = done.output
    return done.reloaded


def prune(
    model: object, data: object = None, *, options: PruneOptions | None = None, **kw: object
) -> PruneReport:
    """Prune ``model`` on ``data``; keyword arguments are :class:`PruneOptions` or ``AuditOptions`` fields."""
    opts = options or prune_options(kw)
    if not opts.max_drift > 0:
        raise InputError(f"--max-drift {opts.max_drift:g}: must be positive")
    if opts.only_proven and not opts.input_range:
        raise InputError(
            "--only-proven needs --input-range",
            hint="e.g. --input-range 0,1, or -inf,inf for weights-only facts",
        )
    check_output(opts.output, opts.force, model)
    t0 = time.perf_counter()
    s = _start(model, data, opts)
    new, drift = _choose(s, _candidates(s))
    release_values(s.graph)
    report = _report(s, new, drift)
    t_plan = time.perf_counter()
    reloaded = _write(s, new, report)
    # A backend whose edited model lives in files (ONNX external data) says what the caller gets.
    model_out = getattr(s.pruner, "model_out", None)
    report.model_out = model_out(new, reloaded) if callable(model_out) else new
    report.run = {
        "timings_s": {"prune_s": round(t_plan - t0, 4), "write_s": round(time.perf_counter() - t_plan, 4)}
    }
    return report
