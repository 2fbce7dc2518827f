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

import numpy as np

from ..edit.drift import Drift
from ..verdicts import SiteVerdict
from .screen import Group, screen
from .search import TARGET, Step, probe_samples

# Stop once the measured drift is within [ACCEPT, 1] × budget: units are discrete, so a
# tighter window than the per-site search's buys revived units (silero-vad .jit: 51 → more).
ACCEPT = 0.85
# Units are discrete: one costly unit can make the drift jump across the budget, and the
# secant then oscillates around it. Stop after this many confirms without a better choice.
PATIENCE = 4
# Passes kept for the confirmations when screening spends the rest on per-unit probes.
CONFIRM_RESERVE = 8.0

UnitSlopes = dict[str, dict[int, float]]  # site → {unit: slope}
UnitMeasure = Callable[[UnitSlopes, int | None, str], Drift]


@dataclass
class UnitSite:
    name: str
    dead: list[int]
    energy: np.ndarray  # e_u per dead unit (same order as ``dead``), divided by ‖y‖²
    gain: np.ndarray | None = None  # per dead unit, from screening (:mod:`.screen`); else the site's

    def costs(self, gains: dict[str, float]) -> np.ndarray:
        """The first-order drift per unit of slope, per dead unit: ``G·sqrt(e_u)``."""
        g = self.gain if self.gain is not None else gains.get(self.name, 1.0)
        return np.asarray(g, dtype=np.float64) * np.sqrt(np.maximum(np.asarray(self.energy, np.float64), 0.0))


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
    costs = [(float(c), s.name, int(u)) for s in sites for u, c in zip(s.dead, s.costs(gains), strict=True)]
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
    by = {s.name: dict(zip(s.dead, s.costs(gains), strict=True)) for s in sites}
    return math.sqrt(sum((a * float(by[n][u])) ** 2 for n, units in slopes.items() for u, a in units.items()))


def count(slopes: UnitSlopes) -> int:
    return sum(len(v) for v in slopes.values())


class _Ledger:
    """Runs ``measure`` and books each run: its share of a pass and a step for the report."""

    def __init__(
        self, measure: UnitMeasure, total_samples: int, progress: Callable[[int], None] | None
    ) -> None:
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
    sites: list[UnitSite], run: _Ledger, passes: float, min_slope: float, target: float
) -> tuple[dict[str, float], str]:
    """Per-site gains from one probe each (every dead unit at ``min_slope``) when the passes allow,
    then per-unit gains from screening (:mod:`.screen`) with the passes the confirmations can spare."""
    m = probe_samples(len(sites), run.total)
    gains = {s.name: 1.0 for s in sites}
    share = m / run.total
    spare = passes - len(sites) * share - CONFIRM_RESERVE
    if len(sites) > 1 and passes - len(sites) * share < 2:
        return gains, "statistics"
    if len(sites) <= 1 and spare < 2 * share:  # one site: probing pays only when screening follows
        return gains, "statistics"
    groups = []
    for s in sites:
        probe = {s.name: dict.fromkeys(s.dead, min_slope)}
        d = run.run(probe, m, f"probe {s.name}", None)
        p = predicted(probe, sites, {s.name: 1.0})
        gains[s.name] = d.rel_l2 / p if p > 0 else (0.0 if d.rel_l2 == 0 else 1e6)
        groups.append(Group(s.name, list(range(len(s.dead))), d.rel_l2, p))
    n_probes = int(spare / share) if share > 0 else 0
    if math.hypot(*(g.drift for g in groups)) <= target:
        n_probes = 0  # every dead unit is predicted to fit: nothing to screen
    if n_probes >= 2:
        per_unit = screen(
            groups,
            {s.name: s.dead for s in sites},
            {s.name: np.asarray(s.energy, np.float64) for s in sites},
            lambda sl, purpose: run.run(sl, m, purpose, None),
            min_slope,
            n_probes,
            target,
        )
        for s in sites:
            s.gain = per_unit[s.name]
        return gains, "screen"
    return gains, "probe"


def ranked(sites: list[UnitSite], gains: dict[str, float]) -> list[tuple[float, str, int]]:
    """Every dead unit as ``(estimated cost, site, unit)``, cheapest first (ties: site, unit order)."""
    out = [(float(c), s.name, int(u)) for s in sites for u, c in zip(s.dead, s.costs(gains), strict=True)]
    out.sort(key=lambda c: c[0])
    return out


def as_slopes(units: list[tuple[float, str, int]], slope: float) -> UnitSlopes:
    out: UnitSlopes = {}
    for _, n, u in units:
        out.setdefault(n, {})[u] = slope
    return out


def batch_size(
    pending: list[tuple[float, str, int]], base: float, ratio: float, slope: float, target: float, limit: int
) -> int:
    """How many of the next pending units the calibrated quadrature prediction lets join a set
    that measured ``base`` (at least one, at most ``limit``)."""
    room = target**2 - base**2
    acc, b = 0.0, 0
    for c, _, _ in pending[:limit]:
        acc += (ratio * slope * c) ** 2
        if acc > room:
            break
        b += 1
    return max(1, b)


@dataclass
class _Limits:
    budget: float  # the drift budget
    passes: float  # the passes the search may spend
    min_slope: float
    cap: float


def _grow(
    pending: list[tuple[float, str, int]],
    run: _Ledger,
    lim: _Limits,
    over: tuple[UnitSlopes, Drift] | None,
) -> tuple[list[tuple[float, str, int]], Drift, tuple[UnitSlopes, Drift] | None]:
    """Grow the accepted set cheapest first, every step measured (see :func:`search_units`).

    A failed batch is known to hold a unit that breaks the budget (``suspects``: that many
    units at the head of ``pending``); its halves are tried in turn, and when all but one of
    them were accepted the last one is the culprit: it stays dead without another run."""
    target, a = TARGET * lim.budget, lim.min_slope
    accepted: list[tuple[float, str, int]] = []
    base = Drift(0.0, 0.0, 0)
    ratio, limit, suspects = 1.0, len(pending), 0
    while lim.passes - run.spent >= 1 and pending:
        if accepted and (lim.budget**2 - base.rel_l2**2) < (ratio * a * pending[0][0]) ** 2 / 4:
            break  # not even the cheapest pending unit is predicted to fit the room left
        b = batch_size(pending, base.rel_l2, ratio, a, target, limit)
        trial = accepted + pending[:b]
        slopes = as_slopes(trial, a)
        p = a * math.sqrt(sum(c * c for c, _, _ in trial))
        d = run.run(slopes, None, "confirm", p * ratio)
        if p > 0 and d.rel_l2 > 0:
            ratio = d.rel_l2 / p
        if d.rel_l2 <= lim.budget:
            accepted, base, pending = trial, d, pending[b:]
            suspects = max(suspects - b, 0)
            if suspects == 1:  # the rest of the failed batch was accepted: this one broke it
                pending, suspects = pending[1:], 0
            limit = max(1, suspects // 2) if suspects else len(pending)
            continue
        if over is None or count(slopes) <= count(over[0]):
            over = (slopes, d)
        if b == 1:
            pending, suspects = pending[1:], 0  # this unit takes the set over the budget: it stays dead
            limit = len(pending)
            continue
        first = suspects == 0  # a fresh failure: the recalibrated prediction may shrink it further
        suspects = b
        again = batch_size(pending, base.rel_l2, ratio, a, target, b - 1) if first else 0
        limit = max(again, b // 2)
    return accepted, base, over


def search_units(
    sites: list[UnitSite],
    measure: UnitMeasure,
    *,
    budget: float,
    total_samples: int,
    passes: float,
    min_slope: float,
    cap: float,
    progress: Callable[[int], None] | None = None,
) -> UnitResult:
    """Choose per-unit slopes; ``measure(slopes, samples, purpose)`` runs the rewritten model.

    Count first, cheapest first, every step measured: the accepted set grows by the next batch
    of units in estimated-cost order that the calibrated prediction lets fit; a batch measured
    over the budget is halved, and a single unit over it is skipped (it stays dead). Then
    slopes: the budget left raises the chosen units' slopes (:func:`allocate`), kept only if
    measured within the budget."""
    run = _Ledger(measure, total_samples, progress)
    target = TARGET * budget
    lim = _Limits(budget, passes, min_slope, cap)
    every = {s.name: dict.fromkeys(s.dead, min_slope) for s in sites if s.dead}
    # One site: no probe can order it better than its statistics until screening, so first
    # check whether every dead unit fits (then there is nothing to choose).
    d_all = run.run(every, None, "confirm all", None) if len(sites) == 1 else None
    if d_all is not None and d_all.rel_l2 <= budget:
        return _finish(sites, {s.name: 1.0 for s in sites}, "statistics", run, every, d_all, None, lim)
    gains, source = _probe_gains(sites, run, passes - run.spent, min_slope, target)
    pending = ranked(sites, gains)
    over: tuple[UnitSlopes, Drift] | None = (every, d_all) if d_all is not None else None
    accepted, base, over = _grow(pending, run, lim, over)
    if not accepted:
        d0 = over[1] if over else Drift(math.inf, math.inf, 0)
        return UnitResult({}, d0, False, gains, source, None, run.steps, over)
    return _finish(sites, gains, source, run, as_slopes(accepted, min_slope), base, over, lim)


def _finish(
    sites: list[UnitSite],
    gains: dict[str, float],
    source: str,
    run: _Ledger,
    slopes: UnitSlopes,
    d: Drift,
    over: tuple[UnitSlopes, Drift] | None,
    lim: _Limits,
) -> UnitResult:
    """The chosen units with the budget left spent on larger slopes, when measured within it."""
    p = predicted(slopes, sites, gains)
    if lim.passes - run.spent >= 1 and lim.cap > lim.min_slope and d.rel_l2 < ACCEPT * lim.budget:
        raised = _raise(sites, gains, slopes, d, p, TARGET * lim.budget, lim.min_slope, lim.cap)
        if raised is not None:
            d2 = run.run(raised, None, "raise slopes", predicted(raised, sites, gains))
            if d2.rel_l2 <= lim.budget:
                slopes, d, p = raised, d2, predicted(raised, sites, gains)
    return UnitResult(slopes, d, True, gains, source, p, run.steps, over)


def _raise(
    sites: list[UnitSite],
    gains: dict[str, float],
    chosen: UnitSlopes,
    d: Drift,
    p: float,
    target: float,
    min_slope: float,
    cap: float,
) -> UnitSlopes | None:
    """The chosen units' slopes raised so the calibrated prediction meets ``target`` (None: no room)."""
    if p <= 0 or d.rel_l2 <= 0:
        return None
    keep = [
        UnitSite(
            s.name,
            [u for u in s.dead if u in chosen.get(s.name, {})],
            np.asarray([e for u, e in zip(s.dead, s.energy, strict=True) if u in chosen.get(s.name, {})]),
            None
            if s.gain is None
            else np.asarray([g for u, g in zip(s.dead, s.gain, strict=True) if u in chosen.get(s.name, {})]),
        )
        for s in sites
        if chosen.get(s.name)
    ]
    raised = allocate(keep, gains, target * p / d.rel_l2, min_slope, cap)
    if count(raised) < count(chosen) or raised == chosen:
        return None
    return raised


def site_energy(v: SiteVerdict, dead_only: bool) -> float:
    """sqrt(Σ min(z, 0)²) over the units that get a slope: the first-order size of the change."""
    sq = np.asarray(v.stats.neg_sq, dtype=np.float64)
    if dead_only:
        sq = sq[list(v.dead_units)]
    return math.sqrt(float(sq.sum()))
