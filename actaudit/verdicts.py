"""From per-unit counters to verdicts: dead, saturated, rarely firing, never positive.

Definitions (docs/statistics.md repeats them):

* a rectifier unit *fires* on the finite elements where it is not stuck low; it is
  **dead** when its fire rate is <= ``dead_rate`` (default 0: stuck low on every
  element). LeakyReLU/PReLU units whose slope is at least the stuck fraction never
  die; those that were never positive are reported as **never positive**.
* a bounded unit (tanh, sigmoid, hardtanh, hardsigmoid, softsign, clip) is
  **saturated** when stuck (low or high) on >= ``saturation_rate`` of its elements;
  a capped rectifier (ReLU6) is saturated when stuck *high* that often.
* a live rectifier unit firing on fewer than ``rare_rate`` of its elements is
  **rarely firing**.
* dead verdicts carry a 95 % upper bound on the true firing rate, from the number of
  independent calibration samples ``n``: ``1 - 0.05 ** (1 / n)`` (about 3/n, the rule
  of three). Elements inside one sample (pixels, tokens) are not independent, so the
  bound uses samples, not elements.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import numpy as np

from .errors import InputError
from .kinds import DEFAULT_STUCK_FRACTION, Activation, Family, family
from .stats import SiteInfo, SiteStats


@dataclass(frozen=True)
class Settings:
    stuck_fraction: float = DEFAULT_STUCK_FRACTION
    dead_rate: float = 0.0
    saturation_rate: float = 0.99
    rare_rate: float = 0.01

    def __post_init__(self) -> None:
        # A NaN threshold compares false everywhere: detection would be off and every gate would pass.
        for f in fields(self):
            v = getattr(self, f.name)
            if not (isinstance(v, int | float) and math.isfinite(v) and 0.0 <= v <= 1.0):
                raise InputError(f"{f.name}={v!r}: a threshold is a finite number in [0, 1]")

    def to_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def upper_bound_95(samples: int) -> float | None:
    """One-sided 95 % upper bound on a rate never observed in ``samples`` independent trials."""
    if samples <= 0:
        return None
    return float(1.0 - 0.05 ** (1.0 / samples))


@dataclass
class SiteVerdict:
    info: SiteInfo
    stats: SiteStats
    family: Family
    fire_rate: np.ndarray  # per unit; NaN where a unit saw no finite element
    low_rate: np.ndarray
    high_rate: np.ndarray
    dead_units: list[int] = field(default_factory=list)
    saturated_units: list[int] = field(default_factory=list)
    saturated_low_units: list[int] = field(default_factory=list)
    saturated_high_units: list[int] = field(default_factory=list)
    rarely_firing_units: list[int] = field(default_factory=list)
    never_positive_units: list[int] = field(default_factory=list)
    nonfinite_units: list[int] = field(default_factory=list)
    # With --input-range: units whose pre-activation bound proves them dead on the whole box
    # (None: no bounds asked for); ``proof_note`` says why a site could not be analysed.
    proven_dead_units: list[int] | None = None
    proof_note: str | None = None
    # the weaker tiers of the same proof: an unbounded input (the weights alone), intervals alone
    dead_by_weights_units: list[int] | None = None
    proven_dead_units_interval: list[int] | None = None

    @property
    def can_die(self) -> bool:
        return self.family in (Family.RECTIFIER, Family.CAPPED)

    @property
    def can_saturate(self) -> bool:
        return self.family in (Family.BOUNDED, Family.CAPPED)

    @property
    def units(self) -> int:
        return self.info.units

    @property
    def dead_fraction(self) -> float:
        return len(self.dead_units) / self.units if self.units else 0.0

    @property
    def saturated_fraction(self) -> float:
        return len(self.saturated_units) / self.units if self.units else 0.0

    @property
    def rarely_firing_fraction(self) -> float:
        return len(self.rarely_firing_units) / self.units if self.units else 0.0


def bad_fraction(v: SiteVerdict) -> float:
    """Fraction of a site's units that are dead or saturated (their union, not the larger of the two)."""
    if not v.info.units:
        return 0.0
    return len(set(v.dead_units) | set(v.saturated_units)) / v.info.units


def expected_saturation(v: SiteVerdict) -> bool:
    """A bounded activation that produces a model output (a probability or score head) saturates by design."""
    return bool(v.info.model_output) and bool(v.saturated_units) and not v.dead_units


def worst_sites(sites: list[SiteVerdict], n: int = 3) -> list[SiteVerdict]:
    """Sites with dead or saturated units, worst first; output heads saturating by design come last."""
    bad = [v for v in sites if v.dead_units or v.saturated_units]
    return sorted(bad, key=lambda v: (expected_saturation(v), -bad_fraction(v)))[:n]


def _indices(mask: np.ndarray) -> list[int]:
    return [int(i) for i in np.flatnonzero(mask)]


def classify(info: SiteInfo, stats: SiteStats, settings: Settings) -> SiteVerdict:
    fam = family(info.kind)
    n = stats.finite_elements.astype(np.float64)
    seen = n > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        low_rate = np.where(seen, stats.low / np.maximum(n, 1), np.nan)
        high_rate = np.where(seen, stats.high / np.maximum(n, 1), np.nan)
        fire_rate = np.where(seen, (n - stats.low) / np.maximum(n, 1), np.nan)
    v = SiteVerdict(info, stats, fam, fire_rate, low_rate, high_rate)
    v.nonfinite_units = _indices(stats.nonfinite > 0)

    if fam in (Family.RECTIFIER, Family.CAPPED):
        leaky = _leaky_mask(info, settings.stuck_fraction)
        dead = seen & ~leaky & (fire_rate <= settings.dead_rate)
        v.dead_units = _indices(dead)
        v.never_positive_units = _indices(seen & leaky & (stats.low >= n))
        v.rarely_firing_units = _indices(seen & ~leaky & ~dead & (fire_rate < settings.rare_rate))
    if fam is Family.CAPPED:
        sat_high = seen & (high_rate >= settings.saturation_rate)
        v.saturated_units = _indices(sat_high)
        v.saturated_high_units = list(v.saturated_units)
    elif fam is Family.BOUNDED:
        sat = seen & (low_rate + high_rate >= settings.saturation_rate)
        v.saturated_units = _indices(sat)
        v.saturated_low_units = _indices(sat & (low_rate >= high_rate))
        v.saturated_high_units = _indices(sat & (low_rate < high_rate))
    return v


def _leaky_mask(info: SiteInfo, f: float) -> np.ndarray:
    """Per unit: does a non-zero negative slope keep it alive?"""
    if info.kind == "prelu" and info.unit_slopes is not None:
        slopes = np.abs(np.asarray(info.unit_slopes, dtype=np.float64))
        if slopes.size == 1:
            slopes = np.full(info.units, slopes.item())
        return slopes >= f * np.maximum(1.0, slopes)
    leaky = Activation(info.kind, info.params).thresholds(f).leaky
    return np.full(info.units, leaky)
