"""Per-unit slopes on dead units only, cheapest first, under an end-to-end drift budget.

With the exact shift ``a·E[min(z, 0)]`` subtracted after the activation, giving dead
unit *u* the slope *a* changes the site's output by ``a·(min(z, 0) − E[min(z, 0)])``:
a zero-mean signal whose energy over the calibration set is
``e_u = Σ min(z, 0)² − n·E[min(z, 0)]²`` (from the audit's counters). To first order
the output drift it causes is ``a·G_s·sqrt(e_u)/‖y‖`` for a gain ``G_s`` per site (one
probe per site measures it; without probes it is 1 and one measured pass calibrates
all), and units add in quadrature.

Allocation for a prediction target ``v``: units sorted by cost ``c_u = G_s·sqrt(e_u)/‖y‖``
are taken at ``min_slope`` while ``sqrt(Σ (min_slope·c_u)²) <= v``; the leftover budget
raises their slopes to ``clip(t/c_u, min_slope, cap)`` with one scale ``t`` (equal drift
per unit maximises ``Σ log a_u``). The real rewritten model is then measured, and a
secant step on ``log D`` against ``log v`` corrects ``v`` until the drift lands in
``[ACCEPT, 1]`` × budget (ACCEPT = 0.85), every dead unit is at the cap, or the pass budget is spent.
The feasible choice with the most revived units (then the largest prediction) wins.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..edit.drift import Drift
from .search import TARGET, Step, next_value, probe_samples

# Stop once the measured drift is within [ACCEPT, 1] × budget: units are discrete, so a
# tighter window than the per-site search's buys revived units (silero-vad .jit: 51 → more).
ACCEPT = 0.85
# Units are discrete: one costly unit can make the drift jump across the budget, and the
# secant then oscillates around it. Stop after this many confirms without a better choice.
PATIENCE = 4

UnitSlopes = dict[str, dict[int, float]]  # site → {unit: slope}
UnitMeasure = Callable[[UnitSlopes, int | None, str], Drift]


@dataclass
class UnitSite:
    name: str
    dead: list[int]
    energy: np.ndarray  # e_u per dead unit (same order as ``dead``), divided by ‖y‖²


@dataclass
class UnitResult:
    slopes: UnitSlopes  # only revived units
    drift: Drift
    feasible: bool
    gains: dict[str, float]
    gain_source: str  # probe | statistics
    predicted_total: float | None
    steps: list[Step] = field(default_factory=list)
    best_infeasible: tuple[UnitSlopes, Drift] | None = None  # the smallest change measured over budget


def centered_energy(neg_sq: np.ndarray, neg_mean: np.ndarray, elements: np.ndarray | int) -> np.ndarray:
    """Σ (min(z, 0) − E[min(z, 0)])² per unit, never negative (float cancellation)."""
    e = np.asarray(neg_sq, dtype=np.float64) - np.asarray(elements, dtype=np.float64) * np.square(
        np.asarray(neg_mean, dtype=np.float64)
    )
    return np.maximum(e, 0.0)


def allocate(
    sites: list[UnitSite], gains: dict[str, float], value: float, min_slope: float, cap: float
) -> UnitSlopes:
    """The slopes for one prediction target ``value`` (see the module docstring)."""
    costs: list[tuple[float, str, int]] = []
    for s in sites:
        g = gains.get(s.name, 1.0)
        for u, e in zip(s.dead, s.energy, strict=True):
            costs.append((g * math.sqrt(max(float(e), 0.0)), s.name, int(u)))
    costs.sort(key=lambda c: c[0])
    chosen: list[tuple[float, str, int]] = []
    acc = 0.0
    for c, n, u in costs:
        nxt = acc + (min_slope * c) ** 2
        if math.sqrt(nxt) > value:
            break
        acc = nxt
        chosen.append((c, n, u))
    if not chosen:
        return {}

    def pred(t: float) -> float:
        return math.sqrt(
            sum((min(cap, max(min_slope, t / c if c > 0 else cap)) * c) ** 2 for c, _, _ in chosen)
        )

    if pred(math.inf) <= value:
        t = math.inf
    else:
        lo, hi = -40.0, 40.0
        for _ in range(80):
            mid = 0.5 * (lo + hi)
            if pred(math.exp(mid)) <= value:
                lo = mid
            else:
                hi = mid
        t = math.exp(lo)
    out: UnitSlopes = {}
    for c, n, u in chosen:
        a = cap if c <= 0 else min(cap, max(min_slope, t / c))
        out.setdefault(n, {})[u] = a
    return out


def predicted(slopes: UnitSlopes, sites: list[UnitSite], gains: dict[str, float]) -> float:
    by = {s.name: dict(zip(s.dead, s.energy, strict=True)) for s in sites}
    return math.sqrt(
        sum(
            (a * gains.get(n, 1.0)) ** 2 * max(float(by[n][u]), 0.0)
            for n, units in slopes.items()
            for u, a in units.items()
        )
    )


def count(slopes: UnitSlopes) -> int:
    return sum(len(v) for v in slopes.values())


class _Ledger:
    """Runs ``measure`` and books each run: its share of a pass and a step for the report."""

    def __init__(self, measure: UnitMeasure, total_samples: int, progress: Any) -> None:
        self.measure = measure
        self.total = max(total_samples, 1)
        self.progress = progress
        self.spent = 0.0
        self.steps: list[Step] = []

    def run(self, slopes: UnitSlopes, samples: int | None, purpose: str, pred: float | None) -> Drift:
        d = self.measure(slopes, samples, purpose)
        self.spent += d.samples / self.total
        flat = {f"{n}[{u}]": a for n, us in slopes.items() for u, a in us.items()}
        self.steps.append(Step(purpose, flat, pred, d))
        if self.progress is not None:
            self.progress(1)
        return d


def _probe_gains(
    sites: list[UnitSite], run: _Ledger, passes: float, min_slope: float
) -> tuple[dict[str, float], str]:
    """Per-site gains from one probe each (every dead unit at ``min_slope``) when the passes allow."""
    m = probe_samples(len(sites), run.total)
    gains = {s.name: 1.0 for s in sites}
    if len(sites) <= 1 or passes - len(sites) * m / run.total < 2:
        return gains, "statistics"
    for s in sites:
        probe = {s.name: dict.fromkeys(s.dead, min_slope)}
        d = run.run(probe, m, f"probe {s.name}", None)
        p = predicted(probe, sites, {s.name: 1.0})
        gains[s.name] = d.rel_l2 / p if p > 0 else (0.0 if d.rel_l2 == 0 else 1e6)
    return gains, "probe"


def _widened(value: float, floor: float, k: int, allocate_at: Callable[[float], UnitSlopes]) -> float:
    """A prediction target large enough to take more than ``k`` units (no drift to calibrate against)."""
    value = max(value, floor)
    for _ in range(40):
        value *= 10.0
        if count(allocate_at(value)) > k:
            break
    return value


def search_units(
    sites: list[UnitSite],
    measure: UnitMeasure,
    *,
    budget: float,
    total_samples: int,
    passes: float,
    min_slope: float,
    cap: float,
    progress: Any = None,
) -> UnitResult:
    """Choose per-unit slopes; ``measure(slopes, samples, purpose)`` runs the rewritten model."""
    run = _Ledger(measure, total_samples, progress)
    gains, source = _probe_gains(sites, run, passes, min_slope)

    def allocate_at(v: float) -> UnitSlopes:
        return allocate(sites, gains, v, min_slope, cap)

    target = TARGET * budget
    value = target
    history: list[tuple[float, float]] = []
    best: tuple[int, float, UnitSlopes, Drift] | None = None
    over: tuple[UnitSlopes, Drift] | None = None
    tried: set[tuple[Any, ...]] = set()
    all_units = sum(len(s.dead) for s in sites)
    stale = 0  # confirms since the best choice last improved
    while passes - run.spent >= 1 and stale < PATIENCE:
        slopes = allocate_at(value)
        if not slopes:
            # even the cheapest unit at the floor is predicted over: measure it once to know
            first = _cheapest(allocate(sites, gains, math.inf, min_slope, min_slope), sites, gains)
            if not first or ("floor",) in tried:
                break
            tried.add(("floor",))
            slopes = first
        key = tuple(sorted((n, u, round(a, 7)) for n, us in slopes.items() for u, a in us.items()))
        if key in tried:
            break
        tried.add(key)
        p = predicted(slopes, sites, gains)
        d = run.run(slopes, None, "confirm", p)
        if p > 0 and d.rel_l2 > 0:
            history.append((math.log(p), math.log(d.rel_l2)))
        k = count(slopes)
        stale += 1
        if d.rel_l2 <= budget:
            if best is None or (k, p) > (best[0], best[1]):
                best = (k, p, slopes, d)
                stale = 0
            at_cap = k == all_units and all(a >= cap for us in slopes.values() for a in us.values())
            if d.rel_l2 >= ACCEPT * budget or at_cap:
                break
        elif over is None or count(slopes) <= count(over[0]):
            over = (slopes, d)
        if d.rel_l2 == 0 or p == 0:
            # No measurable change (saturated outputs, or units that are constant on this data):
            # nothing to calibrate against, so widen the target until more units are taken.
            if k == all_units:
                break
            value = _widened(value, max(p, target), k, allocate_at)
            continue
        value = next_value(history, target)
    if best is None:
        d0 = over[1] if over else Drift(math.inf, math.inf, 0)
        return UnitResult({}, d0, False, gains, source, None, run.steps, over)
    _, p, slopes, d = best
    return UnitResult(slopes, d, True, gains, source, p, run.steps, over)


def _cheapest(slopes: UnitSlopes, sites: list[UnitSite], gains: dict[str, float]) -> UnitSlopes:
    best: tuple[float, str, int] | None = None
    for s in sites:
        for u, e in zip(s.dead, s.energy, strict=True):
            c = gains.get(s.name, 1.0) * math.sqrt(max(float(e), 0.0))
            if best is None or c < best[0]:
                best = (c, s.name, int(u))
    if best is None:
        return {}
    a = next(iter(next(iter(slopes.values())).values())) if slopes else 0.01
    return {best[1]: {best[2]: a}}
