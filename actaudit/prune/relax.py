"""Linear relaxations of elementwise activations over an input interval, for :mod:`.linear`.

Per element, a lower line ``sl·x + il`` and an upper line ``su·x + iu`` with
``sl·x + il <= f(x) <= su·x + iu`` for every ``x`` in ``[l, u]``.

ReLU and LeakyReLU get the classical CROWN lines (Zhang et al. 2018). Every other activation
gets a *sampled* relaxation, sound for any function whose derivative lies in a known range
``[d_min, d_max]``: for a slope ``k``, ``g(x) = f(x) - k·x`` changes by at most
``L·h/2`` between two grid points ``h`` apart (``L = max(|d_min - k|, |d_max - k|)``), so the
grid's extreme of ``g`` moved by ``L·h/2`` is an intercept that holds on the whole interval.
Several slopes are tried (the chord, tangents at both ends and the middle, zero) and the
one with the smallest mean gap to ``f`` on the grid is kept: tangent/chord on the convex and
concave sides of sigmoid and tanh, the chord-parallel pair where they cross. Runtimes
approximate these functions: both lines move out by 8 float32 ulps of ``|f|`` plus 2⁻²⁰
(GELU: 10⁻³, which also covers its tanh approximation). An element whose input bound is
infinite gets the constant lines of its output's interval bound.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from ..edit.graph import Op
from .interval import ABS_ACT, EPS32, Box

GRID = 33
Fn = Callable[[np.ndarray], np.ndarray]


class Unrelaxed(Exception):
    """The activation has no relaxation here (unknown kind, parameters out of range)."""


def _sigmoid(v: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-v))


def _gelu(v: np.ndarray) -> np.ndarray:
    # the tanh form; the erf form differs by < 5e-4, inside GELU's absolute margin
    with np.errstate(over="ignore", invalid="ignore"):
        return 0.5 * v * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (v + 0.044715 * v**3)))


def function(op: Op) -> tuple[Fn, float, float, float]:
    """``(f, d_min, d_max, absolute margin)`` of an activation op (float64 ``f``)."""
    name, at = str(op.attrs.get("act", "")), op.attrs
    if name == "sigmoid":
        return _sigmoid, 0.0, 0.25, ABS_ACT
    if name == "tanh":
        return np.tanh, 0.0, 1.0, ABS_ACT
    if name == "elu":
        a, sc, isc = (
            float(at.get("alpha", 1.0)),
            float(at.get("scale", 1.0)),
            float(at.get("input_scale", 1.0)),
        )
        if a < 0 or sc < 0 or isc < 0:
            raise Unrelaxed

        def elu(v: np.ndarray) -> np.ndarray:
            return sc * np.where(v > 0, v, a * np.expm1(isc * np.minimum(v, 0.0)))

        return elu, 0.0, sc * max(1.0, a * isc), ABS_ACT
    if name == "softplus":
        beta = float(at.get("beta", 1.0))
        if beta <= 0:
            raise Unrelaxed
        return (lambda v: np.logaddexp(0.0, beta * v) / beta), 0.0, 1.0, ABS_ACT
    if name == "hardsigmoid":
        a, b = float(at.get("alpha", 0.2)), float(at.get("beta", 0.5))
        if a < 0:
            raise Unrelaxed
        return (lambda v: np.clip(a * v + b, 0.0, 1.0)), 0.0, a, ABS_ACT
    if name == "clip":
        lo, hi = float(at.get("lo", -math.inf)), float(at.get("hi", math.inf))
        return (lambda v: np.clip(v, lo, max(lo, hi))), 0.0, 1.0, ABS_ACT
    if name == "hardswish":
        return (lambda v: v * np.clip(v + 3.0, 0.0, 6.0) / 6.0), -0.5, 1.5, ABS_ACT
    if name == "silu":
        return (lambda v: v * _sigmoid(v)), -0.1, 1.1, ABS_ACT
    if name == "gelu":
        return _gelu, -0.13, 1.13, 1e-3
    raise Unrelaxed


def relax(
    op: Op, x: Box, y: Box, lower: str | np.ndarray = "adaptive"
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Lower (slope, intercept) and upper (slope, intercept) per element of ``act(x)``.

    ``y`` is the interval bound of the output: the constant lines where ``x`` is unbounded.
    ``lower``: a crossing ReLU's lower line, ``adaptive`` (slope 1 or α, whichever side is
    larger: Zhang et al.), ``flat`` (slope α, often better where many units cross), or an array
    ``t`` in [0, 1] (slope ``α + t·(1 − α)``; one row per bounded element: α-CROWN's free slopes).
    The lower slopes may then come back as a matrix, one row per bounded element.
    """
    name = str(op.attrs.get("act", ""))
    if name == "clip" and (op.attrs.get("lo"), op.attrs.get("hi")) == (0.0, math.inf):
        name = "relu"
    lo, hi = x.lo.reshape(-1), x.hi.reshape(-1)
    if name == "identity":
        one = np.ones(lo.size)
        return one, 0 * one, one, 0 * one
    if name in ("relu", "leaky_relu"):
        alpha = 0.0 if name == "relu" else float(op.attrs.get("alpha", 0.01))
        if not 0 <= alpha <= 1:
            raise Unrelaxed
        return _relu(lo, hi, alpha, y, lower)
    f, dmin, dmax, absm = function(op)
    fin = np.isfinite(lo) & np.isfinite(hi)
    sl, su = np.zeros(lo.size), np.zeros(lo.size)
    il, iu = y.lo.reshape(-1).astype(np.float64), y.hi.reshape(-1).astype(np.float64)
    if fin.any():
        s_l, i_l, s_u, i_u = sampled(f, dmin, dmax, absm, lo[fin], hi[fin])
        sl[fin], il[fin], su[fin], iu[fin] = s_l, i_l, s_u, i_u
    return sl, il, su, iu


def _relu(
    lo: np.ndarray, hi: np.ndarray, alpha: float, y: Box, lower: str | np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    on, off = lo >= 0, hi <= 0
    cross = ~on & ~off
    fin = np.isfinite(lo) & np.isfinite(hi)
    span = np.where(cross & fin, hi - lo, 1.0)
    # upper: the chord from (l, αl) to (u, u); lower: slope 1 or α, whichever hugs the larger side
    with np.errstate(invalid="ignore"):  # 0 · inf where a side is unbounded: those lines are replaced below
        su = np.where(on, 1.0, np.where(off, alpha, (hi - alpha * lo) / span))
        iu = np.where(cross, lo * (alpha - su), 0.0)
    if isinstance(lower, np.ndarray):  # any slope in [α, 1] is a lower line through the origin
        pick = alpha + (1.0 - alpha) * np.clip(lower, 0.0, 1.0)
    else:
        pick = np.where(hi >= -lo, 1.0, alpha) if lower == "adaptive" else np.full(lo.shape, alpha)
    sl = np.where(on, 1.0, np.where(off, alpha, pick))
    # the chord is rounded in float64: lift it by a relative margin
    iu = iu + 1e-12 * (np.abs(lo) + np.abs(hi))
    # a crossing element with an infinite side: slope 1/α lines still hold below; above, the
    # output's own interval bound (a constant)
    wild = cross & ~fin
    su = np.where(wild, 0.0, su)
    iu = np.where(wild, y.hi.reshape(-1), iu)
    return sl, np.zeros(lo.size), su, iu


def sampled(
    f: Fn,
    dmin: float | np.ndarray,
    dmax: float | np.ndarray,
    absm: float | np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sound lines below and above ``f`` on ``[lo, hi]`` per element, from a grid and ``f'``'s range
    (scalars, or one value per element)."""
    t = lo[:, None] + (hi - lo)[:, None] * np.linspace(0.0, 1.0, GRID)[None, :]
    t[:, -1] = hi
    with np.errstate(over="ignore", invalid="ignore"):
        ft = f(t)
    h = (hi - lo) / (GRID - 1)
    mid = 0.5 * (lo + hi)
    span = np.where(hi > lo, hi - lo, 1.0)
    chord = np.where(hi > lo, (ft[:, -1] - ft[:, 0]) / span, 0.0)
    cands = [chord, _slope(f, lo, dmin, dmax), _slope(f, hi, dmin, dmax), _slope(f, mid, dmin, dmax)]
    cands.append(np.zeros_like(lo))
    fmag = np.max(np.abs(ft), axis=1) + np.maximum(np.abs(dmin), np.abs(dmax)) * h
    # runtime approximation and float64 evaluation of the lines
    margin = absm + 8 * EPS32 * fmag + 1e-12 * (np.abs(lo) + np.abs(hi))
    best_l = best_u = None
    for k in cands:
        lip = np.maximum(np.abs(dmin - k), np.abs(dmax - k))
        g = ft - k[:, None] * t
        b_l = g.min(axis=1) - lip * h / 2 - margin
        b_u = g.max(axis=1) + lip * h / 2 + margin
        gap_l, gap_u = np.mean(g, axis=1) - b_l, b_u - np.mean(g, axis=1)
        if best_l is None or best_u is None:
            best_l, best_u = [k, b_l, gap_l], [k, b_u, gap_u]
            continue
        for best, b, gap in ((best_l, b_l, gap_l), (best_u, b_u, gap_u)):
            take = gap < best[2]
            best[0], best[1], best[2] = (
                np.where(take, k, best[0]),
                np.where(take, b, best[1]),
                np.minimum(gap, best[2]),
            )
    assert best_l is not None and best_u is not None
    return best_l[0], best_l[1], best_u[0], best_u[1]


def _slope(f: Fn, at: np.ndarray, dmin: float | np.ndarray, dmax: float | np.ndarray) -> np.ndarray:
    """A numerical derivative (only a candidate slope: soundness never depends on it)."""
    eps = 1e-6 * (1.0 + np.abs(at))
    with np.errstate(over="ignore", invalid="ignore"):
        d = (f(at + eps) - f(at - eps)) / (2 * eps)
    return np.clip(np.where(np.isfinite(d), d, 0.0), dmin, dmax)
