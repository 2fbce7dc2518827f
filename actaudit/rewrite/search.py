"""Choosing the slope α per site under an end-to-end drift budget.

The model: rewriting site *s* with slope α adds α·min(z, 0) to its output, so to
first order the relative output drift it causes is ``α·g_s`` for a per-site gain
``g_s``, and independent sites add in quadrature:

    D(α) ≈ sqrt(Σ_s (α_s·g_s)²)

``g_s`` comes from one of two places:

* **probes** (several sites): each site alone at ``α = PROBE_ALPHA`` on a subset of the
  calibration data sized so all probes together cost about ``PROBE_PASSES`` passes;
* **statistics** (one site, or no budget for probes): the audit's negative-part
  energy ``sqrt(Σ min(z, 0)²) / ‖y‖`` — the drift if the site's change reached the
  output unamplified — scaled by one measured pass.

Allocation: the largest slopes for which the prediction meets the target, sharing the
squared budget in proportion to each site's revival weight (its dead units), i.e.
``α_s = clip(t·sqrt(w_s)/g_s, lo, hi)`` with one scale ``t`` (this maximises
``Σ w_s·log α_s`` under the quadrature model). Then the real rewritten model is run
on all the calibration data; the measured drift corrects ``t`` (a secant step on
``log D`` against ``log t``) until the drift lands in ``[ACCEPT, 1]`` × budget, every
slope is at the top of its range, or the pass budget is spent. The best measured
feasible choice wins; if none is feasible the floor (every α at ``lo``) is measured
and reported as a failed gate.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..edit.drift import Drift
from ..jsonform import json_float as _r

DEFAULT_RANGE = (0.01, 0.3)
PROBE_ALPHA = 0.01  # small: the first-order regime; a large probe saturates downstream ops
PROBE_PASSES = 1.5
TARGET = 0.9  # aim the prediction at 90 % of the budget
ACCEPT = 0.7  # a measured drift within [70 %, 100 %] of the budget ends the search
MIN_PROBE_SAMPLES = 64

Measure = Callable[[dict[str, float], int | None, str], Drift]


@dataclass
class SearchSite:
    name: str
    weight: float  # revival weight: dead units at the site (at least 1)
    energy: float  # sqrt(Σ min(z, 0)²) / ‖y‖ over the calibration set


@dataclass
class Step:
    purpose: str
    slopes: dict[str, float]
    predicted: float | None
    drift: Drift

    def to_dict(self) -> dict[str, Any]:
        vals = sorted(set(self.slopes.values()))
        return {
            "purpose": self.purpose,
            "alpha_min": _r(vals[0]) if vals else None,
            "alpha_max": _r(vals[-1]) if vals else None,
            "sites": len(self.slopes),
            "predicted_drift": _r(self.predicted),
            **{f"measured_{k}": v for k, v in self.drift.to_dict().items()},
        }


@dataclass
class SearchResult:
    slopes: dict[str, float]
    drift: Drift
    feasible: bool
    gains: dict[str, float]
    gain_source: str  # "probe", "statistics" or "fixed"
    predicted: dict[str, float]  # per site, at the chosen slope
    predicted_total: float | None
    site_drift: dict[str, Drift] = field(default_factory=dict)  # each site alone at its slope
    steps: list[Step] = field(default_factory=list)


class _Runner:
    def __init__(self, measure: Measure, total: int, passes: float) -> None:
        self.measure = measure
        self.total = max(total, 1)
        self.passes = passes
        self.spent = 0.0
        self.steps: list[Step] = []

    def left(self) -> float:
        return self.passes - self.spent

    def run(
        self, slopes: dict[str, float], samples: int | None, purpose: str, predicted: float | None
    ) -> Drift:
        d = self.measure(slopes, samples, purpose)
        self.spent += d.samples / self.total
        self.steps.append(Step(purpose, dict(slopes), predicted, d))
        return d


def _alloc(
    sites: list[SearchSite], gains: dict[str, float], t: float, lo: float, hi: float
) -> dict[str, float]:
    out = {}
    for s in sites:
        g = gains[s.name]
        out[s.name] = hi if g <= 0 else min(hi, max(lo, t * math.sqrt(s.weight) / g))
    return out


def _pred(slopes: dict[str, float], gains: dict[str, float]) -> float:
    return math.sqrt(sum((a * gains[n]) ** 2 for n, a in slopes.items()))


def _solve(sites: list[SearchSite], gains: dict[str, float], value: float, lo: float, hi: float) -> float:
    """The scale t whose (uncalibrated) prediction equals ``value``; 0 or inf at the ends."""
    if _pred(_alloc(sites, gains, math.inf, lo, hi), gains) <= value:
        return math.inf
    if _pred(_alloc(sites, gains, 0.0, lo, hi), gains) >= value:
        return 0.0
    a, b = -30.0, 30.0
    for _ in range(100):
        m = 0.5 * (a + b)
        if _pred(_alloc(sites, gains, math.exp(m), lo, hi), gains) <= value:
            a = m
        else:
            b = m
    return math.exp(a)


def probe_samples(n_sites: int, total: int, passes: float = PROBE_PASSES) -> int:
    return min(total, max(min(total, MIN_PROBE_SAMPLES), math.ceil(passes * total / max(n_sites, 1))))


def auto_slopes(
    sites: list[SearchSite],
    measure: Measure,
    *,
    budget: float,
    total_samples: int,
    passes: float,
    lo: float = DEFAULT_RANGE[0],
    hi: float = DEFAULT_RANGE[1],
) -> SearchResult:
    """Search per-site slopes; ``measure(slopes, samples, purpose)`` runs the rewritten model."""
    run = _Runner(measure, total_samples, passes)
    names = [s.name for s in sites]
    m = probe_samples(len(sites), total_samples)
    probe_cost = len(sites) * m / total_samples
    if len(sites) > 1 and run.left() - probe_cost >= 2:
        gains = {}
        for s in sites:
            d = run.run({s.name: PROBE_ALPHA}, m, f"probe {s.name}", None)
            gains[s.name] = d.rel_l2 / PROBE_ALPHA
        source = "probe"
    else:
        gains = {s.name: s.energy for s in sites}
        source = "statistics"
    target = TARGET * budget
    value = target  # what the uncalibrated prediction should equal
    history: list[tuple[float, float]] = []  # (log prediction, log measured)
    best: tuple[float, dict[str, float], Drift] | None = None
    tried: set[tuple[float, ...]] = set()
    last_slopes: dict[str, float] = {}
    while run.left() >= 1:
        t = _solve(sites, gains, value, lo, hi)
        slopes = _alloc(sites, gains, t, lo, hi)
        key = tuple(round(slopes[n], 7) for n in names)
        if key in tried:
            break
        tried.add(key)
        p = _pred(slopes, gains)
        d = run.run(slopes, None, "confirm", p * _calibration(history))
        last_slopes = slopes
        if p > 0 and d.rel_l2 > 0:
            history.append((math.log(p), math.log(d.rel_l2)))
        if d.rel_l2 <= budget:
            if best is None or p > best[0]:
                best = (p, slopes, d)
            if d.rel_l2 >= ACCEPT * budget or all(a >= hi for a in slopes.values()):
                break
        elif all(a <= lo for a in slopes.values()):
            break
        if not history:
            break  # the rewrite changes nothing measurable: nothing to calibrate
        value = next_value(history, target)
    if best is None:
        floor = dict.fromkeys(names, lo)
        if floor != last_slopes and run.left() >= 1:
            d = run.run(floor, None, "floor", None)
        elif run.steps and floor == last_slopes:
            d = run.steps[-1].drift
        else:
            d = run.run(floor, None, "floor", None)
        best = (_pred(floor, gains), floor, d)
    p, slopes, d = best
    cal = _calibration(history) if source == "statistics" else 1.0
    res = SearchResult(
        slopes=slopes,
        drift=d,
        feasible=d.rel_l2 <= budget,
        gains={n: gains[n] * cal for n in names},
        gain_source=source,
        predicted={n: slopes[n] * gains[n] * cal for n in names},
        predicted_total=p * _calibration(history),
        steps=run.steps,
    )
    _attribute(res, run, m)
    return res


def _calibration(history: list[tuple[float, float]]) -> float:
    """measured / predicted at the latest confirm (1 before any)."""
    if not history:
        return 1.0
    lp, lm = history[-1]
    return math.exp(lm - lp)


def next_value(history: list[tuple[float, float]], target: float) -> float:
    """Secant step on log D against log prediction: the prediction value expected to measure ``target``."""
    lp, lm = history[-1]
    slope = 1.0
    if len(history) >= 2:
        lp0, lm0 = history[-2]
        if abs(lp - lp0) > 1e-9:
            slope = min(3.0, max(0.5, (lm - lm0) / (lp - lp0)))
    return math.exp(lp + (math.log(target) - lm) / slope)


def fixed_slopes(
    sites: list[SearchSite],
    alpha: float,
    measure: Measure,
    *,
    total_samples: int,
    passes: float,
    budget: float,
) -> SearchResult:
    run = _Runner(measure, total_samples, passes)
    slopes = {s.name: alpha for s in sites}
    gains = {s.name: s.energy for s in sites}
    p = _pred(slopes, gains)
    d = run.run(slopes, None, "measure", None)
    cal = d.rel_l2 / p if p > 0 else 1.0
    res = SearchResult(
        slopes=slopes,
        drift=d,
        feasible=d.rel_l2 <= budget,
        gains={n: g * cal for n, g in gains.items()},
        gain_source="fixed",
        predicted={n: alpha * gains[n] * cal for n in slopes},
        predicted_total=d.rel_l2,
        steps=run.steps,
    )
    _attribute(res, run, probe_samples(len(sites), total_samples))
    return res


def _attribute(res: SearchResult, run: _Runner, m: int) -> None:
    """Measure each site alone at its chosen slope, when the pass budget allows."""
    if len(res.slopes) == 1:
        (name,) = res.slopes
        res.site_drift[name] = res.drift
        return
    if run.left() < len(res.slopes) * m / run.total:
        return
    for name, a in res.slopes.items():
        res.site_drift[name] = run.run({name: a}, m, f"attribute {name}", res.predicted.get(name))
    res.steps = run.steps
