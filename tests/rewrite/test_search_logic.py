"""The slope search's arithmetic on hand-computed numbers (no model runs)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from actaudit.rewrite.search import next_value, probe_samples
from actaudit.rewrite.units import UnitSite, allocate, centered_energy, count, predicted


def test_centered_energy_subtracts_the_mean_and_never_goes_negative() -> None:
    # unit 0: 10 − 4·(−1)² = 6; unit 1: 1 − 4·0.36 = −0.44 → 0
    e = centered_energy(np.array([10.0, 1.0]), np.array([-1.0, -0.6]), 4)
    np.testing.assert_allclose(e, [6.0, 0.0])


def test_allocate_takes_the_cheapest_units_then_shares_the_budget() -> None:
    # costs sqrt(e): s2 unit 3 → 1, s1 unit 0 → 2, s1 unit 1 → 4. At 0.01 each: 0.01, then
    # sqrt(0.01² + 0.02²) = 0.0224 ≤ 0.03, then + 0.04² → 0.0458 > 0.03: two units taken.
    # Equal drift per unit: t·sqrt(2) = 0.03 → t = 0.0212132; slopes t/1 and t/2.
    sites = [UnitSite("s1", [0, 1], np.array([4.0, 16.0])), UnitSite("s2", [3], np.array([1.0]))]
    gains = {"s1": 1.0, "s2": 1.0}
    got = allocate(sites, gains, 0.03, 0.01, 0.3)
    assert count(got) == 2 and set(got) == {"s1", "s2"} and list(got["s1"]) == [0]
    t = 0.03 / math.sqrt(2)
    assert got["s2"][3] == pytest.approx(t, rel=1e-9)
    assert got["s1"][0] == pytest.approx(t / 2, rel=1e-9)
    # the first-order prediction of that choice is the target: sqrt(t²·1 + (t/2)²·4) = 0.03
    assert predicted(got, sites, gains) == pytest.approx(0.03, rel=1e-9)


def test_allocate_caps_slopes_and_returns_nothing_when_even_the_floor_is_over() -> None:
    sites = [UnitSite("s", [0], np.array([1.0]))]
    assert allocate(sites, {"s": 1.0}, 1.0, 0.01, 0.3) == {"s": {0: 0.3}}  # t = inf → the cap
    assert allocate(sites, {"s": 1.0}, 0.005, 0.01, 0.3) == {}  # 0.01·1 > 0.005


def test_next_value_is_a_secant_step_in_log_space() -> None:
    # one point: slope 1 → 0.01 · 0.009 / 0.02 = 0.0045
    assert next_value([(math.log(0.01), math.log(0.02))], 0.009) == pytest.approx(0.0045)
    # two points: slope log(4)/log(2) = 2 → 0.02 · sqrt(0.009 / 0.08) = 0.0067082
    history = [(math.log(0.01), math.log(0.02)), (math.log(0.02), math.log(0.08))]
    assert next_value(history, 0.009) == pytest.approx(0.02 * math.sqrt(0.009 / 0.08))
    # a slope outside [0.5, 3] is clamped: log(1000)/log(2) ≈ 9.97 → 3
    steep = [(math.log(0.01), math.log(0.001)), (math.log(0.02), math.log(1.0))]
    assert next_value(steep, 0.5) == pytest.approx(0.02 * 0.5 ** (1 / 3))


def test_probe_samples() -> None:
    assert probe_samples(4, 1000) == 375  # ceil(1.5 · 1000 / 4)
    assert probe_samples(100, 1000) == 64  # never below 64 samples
    assert probe_samples(2, 30) == 30  # never more than there is
