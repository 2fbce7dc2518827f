"""Units proven dead for every input in a box, from interval bounds over the model's graph.

Used by ``actaudit audit --input-range`` (proofs beside the data's verdicts) and by
``actaudit prune --only-proven`` (only proven units are cut).
"""

from __future__ import annotations

import math

import numpy as np

from ..backends.base import ModelHandle, Pruner
from ..data import DataSource
from ..edit.graph import Graph
from ..edit.ranges import InputRange, parse_input_ranges
from ..kinds import Activation
from ..verdicts import SiteVerdict
from .fresh import data_ranges
from .interval import propagate, unit_upper
from .linear import propagate_linear


def prove(
    pruner: Pruner,
    model: object,
    ranges: dict[str, tuple[float, float]],
    shapes: dict[str, tuple[int, ...]],
    sites: list[SiteVerdict],
    stuck: float,
    method: str = "linear",
    graph: Graph | None = None,
) -> dict[str, list[int] | str]:
    """Per site: units whose pre-activation is at or below the dead threshold for every input in the box.

    ``method``: ``interval`` bounds, or ``linear`` (interval bounds tightened by linear
    relaxations, :mod:`.linear`; never weaker).
    """
    graph = graph if graph is not None else pruner.graph(model, shapes)
    run = propagate_linear if method == "linear" else propagate
    env = run(graph, ranges, {n: (1, *s) for n, s in shapes.items()})
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


def contradicted(v: SiteVerdict, proven: list[int]) -> list[int]:
    """Proven units whose pre-activation passed the dead threshold on some calibration element.

    The proof says every element is at or below the threshold, which is exactly what the
    ``low`` counter counts: any unit with fewer low elements than finite ones fired. (A
    family's verdict lists are no test: a sigmoid stuck low is *saturated*, never *dead*.)
    """
    st = v.stats
    return [u for u in proven if st.finite_elements[u] > 0 and st.low[u] < st.finite_elements[u]]


def check_box(
    ranges: list[InputRange], pruner: Pruner, box: dict[str, tuple[float, float]], notes: list[str]
) -> None:
    """A note per calibration input outside the box: the proofs then cover the box, not that data."""
    names = pruner.range_names(ranges)
    for r, name in zip(ranges, names, strict=True):
        lo, hi = box.get(name, (-math.inf, math.inf))
        if r.low < lo or r.high > hi:
            notes.append(
                f"calibration input {name} spans [{r.low:g}, {r.high:g}], outside --input-range [{lo:g}, {hi:g}]: proofs cover the box, not that data"
            )


def attach_proofs(
    sites: list[SiteVerdict],
    warnings: list[str],
    handle: ModelHandle,
    source: DataSource,
    samples: int | None,
    input_range: list[str],
    stuck: float,
) -> None:
    """Mark the three tiers of proof on an audit's sites: ``dead_by_weights_units`` (interval bounds
    from an unbounded input), ``proven_dead_units_interval`` (interval bounds over the box) and
    ``proven_dead_units`` (linear relaxations over intervals, the tightest).

    A proof that contradicts the data (a proven unit that fired on a calibration sample
    inside the box, or anywhere for the weights tier) is a bug of the analysis: an internal
    error, never a silent report.
    """
    pruner = handle.pruner(None, None)
    pruner.prepare(source, samples)
    ranges, _, _ = data_ranges(source, samples)
    shapes = pruner.sample_shapes(ranges)
    box = parse_input_ranges(input_range, list(shapes))
    notes: list[str] = []
    check_box(ranges, pruner, box, notes)
    model = pruner.original()
    graph = pruner.graph(model, shapes)
    unbounded = dict.fromkeys(shapes, (-math.inf, math.inf))
    weights = prove(pruner, model, unbounded, shapes, sites, stuck, "interval", graph)
    interval = prove(pruner, model, box, shapes, sites, stuck, "interval", graph)
    proofs = prove(pruner, model, box, shapes, sites, stuck, "linear", graph)
    inside = not notes
    warnings.extend(notes)
    for v in sites:
        got = proofs.get(v.info.name, "not analysed")
        if isinstance(got, str):
            v.proven_dead_units, v.proof_note = [], got
            continue
        v.proven_dead_units = got
        w, iv = weights.get(v.info.name), interval.get(v.info.name)
        v.dead_by_weights_units = w if isinstance(w, list) else None
        v.proven_dead_units_interval = iv if isinstance(iv, list) else None
        for what, units, applies in (("on the box", got, inside), ("by their weights", w, True)):
            fired = contradicted(v, units) if isinstance(units, list) else []
            if fired and applies:
                raise RuntimeError(
                    f"bounds proved units {fired[:8]} of {v.info.name} dead {what}, but they fired on "
                    "calibration data: the bound propagation is unsound here"
                )
