"""Which slope α: the drift, sparsity and gradient of a leaky ReLU over a grid, measured on the user's data.

For the selected ReLU sites, every unit gets the same slope α (what ``LeakyReLU(α)`` in
place of ``ReLU`` does), with the exact shift (``α·E[min(z, 0)]`` subtracted after the
activation) and without it. Per grid point and shift mode, one run of the rewritten model
over at most ``SAMPLES`` calibration samples gives the model's drift (all sites at once).
Per site, one run at ``REF_ALPHA`` with and one without the shift gives its own drift
(at most ``MAX_SITES`` sites, those with the most dead units); a site's drift at another α
is that measurement scaled by ``α / REF_ALPHA`` (first order: the change is linear in α),
and is marked as such.

**Sparsity.** A ReLU output is exactly zero on the elements where ``z ≤ 0`` (the audit's
``low`` count). With any α > 0 those elements become ``α·z`` (minus the shift): exact
sparsity falls to zero whatever α is. What α sets is how large the leaked part is: the
*leak share* ``α²·Σ min(z, 0)² / Σ max(z, 0)²`` (from the audit's sums), the energy of the
negative side relative to the positive side.

**Gradient of a revived unit.** For ``h = f(z)``, ``∂L/∂z = f'(z)·∂L/∂h``. A unit that never
fires has ``z < 0`` on every element, so ``f' = α`` everywhere. A live unit of the same site
that fires on a fraction ``p`` of its elements has ``f' = 1`` there and ``α`` elsewhere.
If ``|∂L/∂h|`` has the same distribution for the site's units and does not depend on the
sign of ``z``, the expected gradient ratio is

    E|∂L/∂z_dead| / E|∂L/∂z_live| = α / (p̄ + α·(1 − p̄))

with ``p̄`` the mean firing fraction of the site's live units (≈ ``α / p̄`` for small α).
The same ratio holds for the unit's incoming weights and bias (their gradients are
``∂L/∂z`` times the inputs). The shift is a constant: it changes no gradient.

**Suggested α**: the largest grid slope whose measured drift (with the shift) is within the
budget; none when even the smallest is over.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from ..edit.drift import Drift
from ..edit.slopes import SlopePlan, SurgeryResult
from ..report.rewrite import GridPoint, SiteEvidence, SlopeEvidence
from ..verdicts import SiteVerdict

GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3)
REF_ALPHA = 0.01
SAMPLES = 64  # calibration samples per measurement, at most
MAX_SITES = 16  # sites measured alone, at most

Build = Callable[[list[SlopePlan]], SurgeryResult]
Run = Callable[[SurgeryResult, int | None, str], Drift]


def site_plan(v: SiteVerdict, alpha: float, shift: bool) -> SlopePlan:
    """Slope ``alpha`` on every unit of ``v``'s site, with or without the exact shift."""
    return SlopePlan(
        v.info.name,
        float(alpha),
        units=v.info.units,
        unit_axis=v.info.unit_axis,
        sample_shape=tuple(v.info.sample_shape),
        neg_mean=v.stats.neg_mean(),
        exact_shift=shift,
        kind=v.info.kind,
        former=v.info.former_name,
    )


def gradient_ratio(alpha: float, live_fire: float | None) -> float | None:
    """``α / (p̄ + α·(1 − p̄))``: a dead unit's expected |∂L/∂z| over a live one's (module docstring)."""
    if live_fire is None or live_fire <= 0:
        return None
    return alpha / (live_fire + alpha * (1.0 - live_fire))


def site_numbers(v: SiteVerdict) -> tuple[float | None, float, float]:
    """(mean firing fraction of the live units, exact-zero share of the output, Σ min² / Σ max²)."""
    st = v.stats
    n = np.maximum(np.asarray(st.finite_elements, dtype=np.float64), 1.0)
    fire = 1.0 - np.asarray(st.low, dtype=np.float64) / n
    dead = set(int(u) for u in v.dead_units)
    live = [u for u in range(len(fire)) if u not in dead]
    p = float(np.mean(fire[live])) if live else None
    zero = float(np.sum(np.asarray(st.low, dtype=np.float64)) / float(np.sum(n)))
    pos = float(np.sum(st.pos_sq))
    leak = float(np.sum(st.neg_sq)) / pos if pos > 0 else float("inf")
    return p, zero, leak


def slope_evidence(
    verdicts: Sequence[SiteVerdict], build: Build, run: Run, *, total_samples: int, budget: float
) -> SlopeEvidence | None:
    """Measure the grid on ``verdicts``' sites: ``build(plans)`` makes a variant, ``run(variant,
    samples, purpose)`` measures it. Sites the variant cannot carry as ``LeakyReLU(α)`` are left
    out (the others are measured without them); None when none can."""
    samples = min(total_samples, SAMPLES)
    spent, t0 = 0.0, time.perf_counter()
    trial = build([site_plan(v, REF_ALPHA, True) for v in verdicts])
    verdicts = [v for v in verdicts if v.info.name not in trial.skipped]
    if not verdicts:
        return None

    def measure(plans: list[SlopePlan], purpose: str) -> Drift:
        nonlocal spent
        d = run(build(plans), samples, purpose)
        spent += d.samples / max(total_samples, 1)
        return d

    nums = {v.info.name: site_numbers(v) for v in verdicts}
    model: list[GridPoint] = []
    for a in GRID:
        with_shift = measure([site_plan(v, a, True) for v in verdicts], f"evidence α={a:g}")
        without = measure([site_plan(v, a, False) for v in verdicts], f"evidence α={a:g} no shift")
        ratios = [r for r in (gradient_ratio(a, nums[v.info.name][0]) for v in verdicts) if r is not None]
        model.append(
            GridPoint(
                a,
                with_shift.rel_l2,
                without.rel_l2,
                leak=_mean_leak(verdicts, nums, a),
                gradient_ratio=float(np.median(ratios)) if ratios else None,
                measured=True,
            )
        )
    sites = []
    ranked = sorted(verdicts, key=lambda v: -len(v.dead_units))
    alone = {v.info.name for v in ranked[:MAX_SITES]} if len(verdicts) > 1 else set()
    for v in verdicts:
        p, zero, leak = nums[v.info.name]
        ds = dn = None
        if v.info.name in alone:
            ds = measure([site_plan(v, REF_ALPHA, True)], "evidence per site").rel_l2
            dn = measure([site_plan(v, REF_ALPHA, False)], "evidence per site no shift").rel_l2
        elif len(verdicts) == 1:
            ds, dn = model[GRID.index(REF_ALPHA)].drift_shift, model[GRID.index(REF_ALPHA)].drift_noshift
        grid = [
            GridPoint(
                a,
                None if ds is None else ds * a / REF_ALPHA,
                None if dn is None else dn * a / REF_ALPHA,
                leak=a * a * leak,
                gradient_ratio=gradient_ratio(a, p),
                measured=a == REF_ALPHA and ds is not None,
            )
            for a in GRID
        ]
        sites.append(SiteEvidence(v.info.name, v.info.units, len(v.dead_units), p, zero, grid))
    fits = [g.alpha for g in model if g.drift_shift is not None and g.drift_shift <= budget]
    suggested = max(fits) if fits else None
    ev = SlopeEvidence(list(GRID), samples, round(spent, 3), budget, model, sites, suggested)
    ev.seconds = round(time.perf_counter() - t0, 3)
    return ev


def _mean_leak(
    verdicts: Sequence[SiteVerdict], nums: dict[str, tuple[float | None, float, float]], a: float
) -> float:
    leaks = [a * a * nums[v.info.name][2] for v in verdicts if np.isfinite(nums[v.info.name][2])]
    return float(np.median(leaks)) if leaks else float("nan")
