"""The slope search's arithmetic on hand-computed numbers (no model runs)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from actaudit.edit.drift import Drift
from actaudit.rewrite.screen import Group, margin, screen, split, uncertain
from actaudit.rewrite.search import next_value, probe_samples
from actaudit.rewrite.units import (
    UnitSite,
    allocate,
    batch_size,
    centered_energy,
    count,
    predicted,
    search_units,
)


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


# -- per-unit screening and cheapest-first growth (no model runs) --------------------------------
def _quadrature(costs: dict[tuple[str, int], float], calls: list[int] | None = None):  # type: ignore[no-untyped-def]
    """A measure whose drift is exactly the quadrature sum of per-unit costs × slope."""

    def measure(slopes, samples, purpose):  # type: ignore[no-untyped-def]
        if calls is not None:
            calls.append(sum(len(v) for v in slopes.values()))
        d = math.sqrt(sum((a * costs[(n, u)]) ** 2 for n, us in slopes.items() for u, a in us.items()))
        return Drift(d, d, 8)

    return measure


def test_margin_and_uncertain_count_by_hand() -> None:
    # costs 1, 2, 3, 10 at slope 0.01: reach 0.01, 0.02236, 0.03742, 0.1068; target 0.03 → the 3rd unit
    assert margin(np.array([10.0, 1.0, 3.0, 2.0]), 0.01, 0.03) == 3.0
    g = Group("s", [0, 1, 2, 3], 1.0, 1.0)
    # within a factor BAND = 4 of τ = 3: 1, 2, 3, 10 → 0.75 ≤ c ≤ 12: all four
    assert uncertain(g, np.array([1.0, 2.0, 3.0, 10.0]), 3.0) == 4
    assert uncertain(g, np.array([0.1, 2.0, 3.0, 100.0]), 3.0) == 2
    assert split(g, np.array([5.0, 1.0, 4.0, 2.0])) == ([1, 3], [2, 0])


def test_screen_finds_the_costly_unit_that_the_site_probe_hides() -> None:
    # one site, energies all 1 (the statistics see no difference); true costs 1, 1, 1, 30
    costs = {("s", u): c for u, c in enumerate([1.0, 1.0, 1.0, 30.0])}
    measure = _quadrature(costs)
    d0 = measure({"s": dict.fromkeys(range(4), 0.01)}, None, "").rel_l2
    g = Group("s", [0, 1, 2, 3], d0, 0.01 * 2.0)  # base: 0.01 · sqrt(4 · 1)
    gain = screen(
        [g],
        {"s": [0, 1, 2, 3]},
        {"s": np.ones(4)},
        lambda sl, p: measure(sl, None, p),
        0.01,
        probes_left=6,
        target=0.03,
    )
    # every unit measured in the end: halves {0,1} {2,3}, then {2} {3} (or the like) → exact gains
    np.testing.assert_allclose(gain["s"], [1.0, 1.0, 1.0, 30.0], rtol=1e-9)


def test_search_units_skips_the_costly_unit_and_takes_the_cheap_ones_after_it() -> None:
    # two sites; site b's unit 0 has small energy but cost 0.9 (alone it fits 1 % at 0.01, with any
    # other unit it does not); its neighbours in the energy order are cheap. Quadrature drift:
    # the seven cheap units at 0.01: 0.01 · sqrt(7 · 0.3²) = 0.00794 ≤ 0.01; + the costly one: 0.01204.
    costs = {("a", u): 0.3 for u in range(4)} | {("b", 0): 0.9} | {("b", u): 0.3 for u in (1, 2, 3)}
    sites = [
        UnitSite("a", [0, 1, 2, 3], np.full(4, 0.09)),
        UnitSite("b", [0, 1, 2, 3], np.array([0.01, 0.09, 0.09, 0.09])),
    ]
    res = search_units(
        sites, _quadrature(costs), budget=0.01, total_samples=8, passes=40, min_slope=0.01, cap=0.01
    )
    assert res.feasible
    assert res.slopes == {"a": dict.fromkeys(range(4), 0.01), "b": dict.fromkeys((1, 2, 3), 0.01)}
    assert res.drift.rel_l2 == pytest.approx(0.01 * math.sqrt(7 * 0.09), rel=1e-9)


def test_batch_size_by_hand() -> None:
    pend = [(1.0, "s", 0), (2.0, "s", 1), (3.0, "s", 2)]
    # room 0.03² − 0.01² = 0.0008; adds 0.0001, then 0.0005 (sum 0.0006), then 0.0015: two fit
    assert batch_size(pend, 0.01, 1.0, 0.01, 0.03, 3) == 2
    assert batch_size(pend, 0.01, 1.0, 0.01, 0.03, 1) == 1  # the limit
    assert batch_size(pend, 0.05, 1.0, 0.01, 0.03, 3) == 1  # never fewer than one
