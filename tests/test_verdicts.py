"""Verdicts from hand-built counters: every expectation below is computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from actaudit.stats import SiteInfo, SiteStats
from actaudit.verdicts import Settings, classify, upper_bound_95


def _stats(units: int, elements: int, low, high=None, nonfinite=None, samples: int = 100) -> SiteStats:
    s = SiteStats(units, elements, samples)
    s.low = np.asarray(low, dtype=np.int64)
    if high is not None:
        s.high = np.asarray(high, dtype=np.int64)
    if nonfinite is not None:
        s.nonfinite = np.asarray(nonfinite, dtype=np.int64)
    return s


def test_relu_dead_rare_alive() -> None:
    info = SiteInfo("a", "relu", "relu", units=4)
    v = classify(info, _stats(4, 1000, [1000, 995, 0, 999]), Settings())
    assert v.dead_units == [0]
    assert v.rarely_firing_units == [1, 3]  # fire 0.5 % and 0.1 % < 1 %
    assert v.saturated_units == []
    assert v.fire_rate.tolist() == pytest.approx([0.0, 0.005, 1.0, 0.001])


def test_dead_rate_threshold() -> None:
    info = SiteInfo("a", "relu", "relu", units=2)
    v = classify(info, _stats(2, 1000, [999, 990]), Settings(dead_rate=0.001))
    assert v.dead_units == [0]


def test_leaky_is_never_positive_not_dead() -> None:
    info = SiteInfo("a", "leaky_relu", "leaky_relu", params={"negative_slope": 0.1}, units=2)
    v = classify(info, _stats(2, 50, [50, 10]), Settings())
    assert v.dead_units == []
    assert v.never_positive_units == [0]


def test_prelu_per_unit_slopes() -> None:
    info = SiteInfo("a", "prelu", "prelu", units=3, unit_slopes=[0.25, 0.0, 0.001])
    v = classify(info, _stats(3, 10, [10, 10, 10]), Settings())
    assert v.dead_units == [1, 2]
    assert v.never_positive_units == [0]


def test_bounded_saturation_sides() -> None:
    info = SiteInfo("t", "tanh", "tanh", units=3)
    v = classify(info, _stats(3, 100, [99, 50, 0], [0, 49, 10]), Settings())
    assert v.saturated_units == [0, 1]
    assert v.saturated_low_units == [0, 1]
    assert v.dead_units == []


def test_relu6_dead_and_capped() -> None:
    info = SiteInfo("r", "hardtanh", "relu6", units=3)
    v = classify(info, _stats(3, 100, [100, 0, 0], [0, 100, 98]), Settings())
    assert v.dead_units == [0]
    assert v.saturated_units == [1]


def test_nonfinite_elements_are_excluded() -> None:
    info = SiteInfo("a", "relu", "relu", units=2)
    v = classify(info, _stats(2, 10, [6, 0], nonfinite=[4, 10]), Settings())
    assert v.dead_units == [0]  # 6 finite elements, all stuck
    assert v.nonfinite_units == [0, 1]
    assert np.isnan(v.fire_rate[1])


def test_rule_of_three() -> None:
    assert upper_bound_95(100) == pytest.approx(0.0295, abs=1e-4)
    assert upper_bound_95(1000) == pytest.approx(3 / 1000, rel=0.01)


def test_merge_is_exact() -> None:
    a = _stats(2, 10, [1, 2])
    b = _stats(2, 5, [3, 4])
    a.min, b.min = np.array([0.0, -1.0]), np.array([-2.0, 5.0])
    m = a.merge(b)
    assert m.elements == 15 and m.samples == 200
    assert m.low.tolist() == [4, 6]
    assert m.min.tolist() == [-2.0, -1.0]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -0.1, 1.5])
def test_library_thresholds_are_finite_and_in_range(bad: float) -> None:
    """The Python API refuses what the command line refuses: a NaN rate would pass every gate."""
    from actaudit.errors import InputError

    for name in ("stuck_fraction", "dead_rate", "saturation_rate", "rare_rate"):
        with pytest.raises(InputError, match=name):
            Settings(**{name: bad})
