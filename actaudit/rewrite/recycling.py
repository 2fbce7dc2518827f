"""``--mode recycle`` / ``recycle-leaky``: dead units made to fire again, the function kept exactly.

Each selected site's dead units get new incoming weights (the layer's own scale, seeded) and a
bias that makes them fire on 80 % of the calibration elements; their outgoing weights
are zeroed (:mod:`actaudit.edit.recycle`). With ``recycle-leaky`` the recycled units also get a
leaky slope (no shift is needed: nothing they output reaches the consumer until fine-tuning
moves the zeroed weights), so they keep a gradient below zero. Nothing is searched: the drift
is measured once and is float rounding. Sites whose producer or consumer is not a plain
Linear/Conv are skipped with the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..edit.drift import Drift
from ..edit.recycle import DEFAULT_SHARE, Recycled, RecyclePlan
from ..edit.slopes import SlopePlan, SurgeryResult, float32_up
from ..verdicts import SiteVerdict
from .report import SiteRewrite
from .search import SearchResult

if TYPE_CHECKING:
    from ..backends.base import Surgery
    from ..data import DataSource

RECYCLE_MODES = ("recycle", "recycle-leaky")
DEFAULT_RECYCLE_SLOPE = 0.01


@dataclass
class RecycleOutcome:
    search: SearchResult | None
    final: SurgeryResult | None
    plans: list[SlopePlan]
    recycled: dict[str, Recycled]


def recycle_sites(
    surgeon: Surgery,
    source: DataSource,
    samples: int | None,
    seed: int,
    sites: dict[str, SiteVerdict],
    rows: dict[str, SiteRewrite],
    slope: float | None,
    measure: Callable[[SurgeryResult], Drift],
    extra: list[SlopePlan] | None = None,
) -> RecycleOutcome:
    """Recycle the dead units of ``sites`` through ``surgeon``; ``slope``: the leaky slope they get (or None).

    ``extra``: slope plans for other sites, written into the same model (``--mode train``).
    """
    plans = [
        (RecyclePlan(n, list(v.dead_units), DEFAULT_SHARE, v.info.former_name), v)
        for n, v in sites.items()
        if v.dead_units
    ]
    recycle = getattr(surgeon, "recycle", None)
    if recycle is None:
        why = f"recycling is not available for {surgeon.output_format} models yet (use --mode deploy)"
        for p, _ in plans:
            rows[p.name].status, rows[p.name].reason, rows[p.name].how = "skipped", why, None
        return RecycleOutcome(None, None, [], {})
    slope_plans = [_slope_plan(p, v, slope) for p, v in plans] if slope is not None else []
    geometry = [(p, v.info.units, v.info.unit_axis, tuple(v.info.sample_shape)) for p, v in plans]
    res, done, refused = recycle(geometry, slope_plans + list(extra or []), seed, source, samples)
    for n, why in refused.items():
        rows[n].status, rows[n].reason, rows[n].how = "skipped", f"not recycled: {why}", None
    for n, r in done.items():
        row = rows[n]
        row.status, row.reason = "rewritten", None
        row.how = f"recycled: {r.producer} → {r.consumer}"
        row.revived = len(r.units)
        row.recycled = r.to_dict()
        if slope is not None:
            row.alpha = row.alpha_min = float(float32_up(np.array([slope]))[0])
            row.unit_slopes = {u: row.alpha for u in r.units}
    if not done:
        return RecycleOutcome(None, None, [], {})
    drift = measure(res)
    used = [p for p in slope_plans if p.name in done] + [p for p in extra or [] if p.name in res.rewritten]
    search = SearchResult(
        slopes={p.name: p.alpha for p in used},
        drift=drift,
        feasible=True,
        gains={},
        gain_source="recycle",
        predicted={},
        predicted_total=0.0,
    )
    return RecycleOutcome(search, res, used, done)


def _slope_plan(p: RecyclePlan, v: SiteVerdict, slope: float) -> SlopePlan:
    """A leaky slope on the recycled units only, no shift (their outgoing weights are zero)."""
    vec = np.zeros(v.info.units, dtype=np.float64)
    vec[p.units] = slope
    return SlopePlan(
        p.name,
        float(slope),
        units=v.info.units,
        unit_axis=v.info.unit_axis,
        sample_shape=tuple(v.info.sample_shape),
        neg_mean=None,
        unit_slopes=float32_up(vec).astype(np.float64),
        exact_shift=False,
        kind=v.info.kind,
        former=v.info.former_name,
    )


def trainable_tensors(surgeon: Surgery, rows: dict[str, SiteRewrite], model: object) -> list[str]:
    """What fine-tuning should train to bring dead units back: recycled rows and columns, slope tensors."""
    out: list[str] = []
    for r in rows.values():
        if r.recycled:
            units = r.recycled["units"]
            out.append(f"{r.recycled['producer']}.weight rows {units} and .bias (re-initialised)")
            out.append(f"{r.recycled['consumer']}.weight inputs of units {units} (zeroed)")
    slopes = getattr(surgeon, "slope_parameters", None)
    if slopes is not None:
        out.extend(f"{n} (slopes)" for n in slopes(model))
    return out
