"""Thresholds checked against torch autograd derivatives, not against the formulas in kinds.py."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from actaudit.kinds import ALL_KINDS, Activation, Family, classify_clamp, family

FUNCS = {
    "relu": F.relu,
    "relu6": F.relu6,
    "elu": F.elu,
    "selu": F.selu,
    "celu": lambda x: F.celu(x, alpha=2.0),
    "gelu": F.gelu,
    "silu": F.silu,
    "mish": F.mish,
    "hardswish": F.hardswish,
    "softplus": F.softplus,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "hardsigmoid": F.hardsigmoid,
    "softsign": F.softsign,
    "hardtanh": F.hardtanh,
}
PARAMS = {"celu": {"alpha": 2.0}}


def _grad(fn, x: torch.Tensor) -> torch.Tensor:
    x = x.clone().double().requires_grad_(True)
    fn(x).sum().backward()
    return x.grad.abs()


@pytest.mark.parametrize("kind", sorted(FUNCS))
@pytest.mark.parametrize("f", [0.01, 0.05])
def test_stuck_region_matches_autograd(kind: str, f: float) -> None:
    fn = FUNCS[kind]
    grid = torch.linspace(-40, 40, 160001, dtype=torch.float64)
    d = _grad(fn, grid)
    max_d = d.max().item()
    thr = Activation(kind, PARAMS.get(kind, {})).thresholds(f)
    small = d < f * max_d
    if math.isfinite(thr.low):
        below = grid <= thr.low - 1e-3
        assert bool(small[below].all()), f"{kind}: derivative not flat below low={thr.low}"
        # just above the threshold (outside a flat piecewise region) the unit is alive again
        near = (grid > thr.low + 1e-3) & (grid < thr.low + 0.05)
        assert not bool(small[near].all()), f"{kind}: low={thr.low} is not the edge of the flat tail"
    else:
        assert not bool(small[grid < -30].all())
    if math.isfinite(thr.high):
        above = grid >= thr.high + 1e-3
        assert bool(small[above].all())
        near = (grid < thr.high - 1e-3) & (grid > thr.high - 0.05)
        assert not bool(small[near].all())
    else:
        assert not bool(small[grid > 30].all())


def test_documented_numbers() -> None:
    # NOTES: tanh saturates (derivative < 1 %) beyond |x| = atanh(sqrt(0.99)) = 2.9932; sigmoid beyond 5.9865.
    assert Activation("tanh").thresholds().high == pytest.approx(2.99322, abs=1e-4)
    assert Activation("sigmoid").thresholds().high == pytest.approx(5.98645, abs=1e-4)
    assert Activation("softsign").thresholds().high == pytest.approx(9.0)
    assert Activation("relu").thresholds().low == 0.0


def test_leaky_slopes() -> None:
    assert Activation("leaky_relu", {"negative_slope": 0.01}).thresholds().leaky
    assert not Activation("leaky_relu", {"negative_slope": 0.001}).thresholds().leaky
    assert Activation("prelu", {"negative_slope": 0.25}).thresholds().leaky


@pytest.mark.parametrize(
    ("lo", "hi", "kind"),
    [
        (0, 6, "relu6"),
        (-1, 1, "hardtanh"),
        (0, None, "relu"),
        (1e-10, None, None),
        (None, 1e-8, None),
        (-2, None, "clip"),
    ],
)
def test_classify_clamp(lo, hi, kind) -> None:
    act = classify_clamp(lo, hi)
    assert (act.kind if act else None) == kind


def test_every_kind_has_a_family() -> None:
    for k in ALL_KINDS:
        assert isinstance(family(k), Family)
    assert family("relu6") is Family.CAPPED
