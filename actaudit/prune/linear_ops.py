"""Back-substitution steps of :mod:`.linear` through ops that move, pick, average or combine values.

Each step takes the coefficients ``(a_lo, a_hi)`` (one row per bounded element) on an op's
output and returns the coefficients on its inputs plus the constants the relaxation adds:
``a_lo·y >= Σ a_lo'·x + d_lo`` and ``a_hi·y <= Σ a_hi'·x + d_hi`` for every reachable input.

- max pooling / ReduceMax / GlobalMaxPool: below, the window's element with the largest lower
  bound (``max >= x_j`` always); above, that element where it dominates the others' upper
  bounds (then the max *is* it), else the window's largest upper bound (a constant). Min
  mirrors it. Exact in float32.
- average pooling, global average pooling, ReduceMean/Sum: the averaging matrix, with the
  same float32 rounding bound as the interval rule (``(k + 2)`` ulps of the magnitude).
- Concat, and the broadcasting of a residual Add or a gate Mul: coefficients gathered back
  to each input's elements (summed where one element feeds several).
- a residual Add: both operands keep the coefficients, plus its rounding (2⁻²³ of the
  operands' magnitudes, as in the interval rule); a gate Mul: McCormick's planes
  ``xz >= l_z·x + l_x·z - l_x·l_z`` and ``xz <= u_z·x + l_x·z - l_x·u_z``, plus 2 ulps.
"""

from __future__ import annotations

import math

import numpy as np

from ..edit.graph import Op
from .interval import EPS32, TINY, Box, _patches

Step = tuple[list[tuple[str, np.ndarray, np.ndarray]], np.ndarray, np.ndarray]


class Stop(Exception):
    """The substitution cannot pass this op: the form is evaluated on its output's box."""


def dot(a: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``a @ v`` where a zero coefficient times an infinite value is zero."""
    fin = np.isfinite(v)
    out = a[:, fin] @ v[fin]
    if not fin.all():
        with np.errstate(invalid="ignore"):
            t = a[:, ~fin] * v[~fin]
        out = out + np.where(a[:, ~fin] == 0, 0.0, t).sum(axis=1)
    return out


def scatter(a: np.ndarray, cols: np.ndarray, n_in: int) -> np.ndarray:
    """``a @ B`` with ``B[o, cols[o]] = 1`` (``cols[o] < 0``: no input element)."""
    out = np.zeros((a.shape[0], n_in))
    ok = cols >= 0
    np.add.at(out.T, cols[ok], a[:, ok].T)
    return out


def windows(op: Op, in_shape: tuple[int, ...], out_size: int) -> np.ndarray:
    """``[out elements, K]`` input indices (−1: padding) each output element reduces over."""
    idx = np.arange(math.prod(in_shape), dtype=np.int64).reshape(in_shape)
    if op.kind in ("maxpool", "avgpool"):
        k = [int(i) for i in op.attrs.get("kernel", [])]
        nd = len(k)
        if nd not in (1, 2) or in_shape[0] != 1 or len(in_shape) != nd + 2 or op.attrs.get("ceil_mode"):
            raise Stop
        strides = list(op.attrs.get("strides") or k)
        dil = list(op.attrs.get("dilations") or [1] * nd)
        pads = list(op.attrs.get("pads") or [0] * (2 * nd))
        x = idx[0]
        if nd == 1:
            k, strides, dil, pads = [1, *k], [1, *strides], [1, *dil], [0, pads[0], 0, pads[1]]
            x = x[:, None, :]
        p = _patches(x, (k[0], k[1]), strides, pads, dil, -1)  # [C, kh, kw, Ho, Wo]
        w = p.transpose(0, 3, 4, 1, 2).reshape(-1, k[0] * k[1])
    else:
        axes = tuple(range(2, len(in_shape))) if op.kind == "gap" else tuple(op.attrs.get("axes", ()))
        if not axes or 0 in axes or any(a >= len(in_shape) for a in axes):
            raise Stop
        moved = np.moveaxis(idx, axes, tuple(range(len(in_shape) - len(axes), len(in_shape))))
        w = moved.reshape(-1, math.prod(in_shape[a] for a in axes))
    if w.shape[0] != out_size:
        raise Stop
    return w


def extreme(op: Op, x: Box, a_lo: np.ndarray, a_hi: np.ndarray, how: str) -> Step:
    """Max (or min) over windows: one selected element, exact where it dominates, else a constant."""
    w = windows(op, x.lo.shape, a_lo.shape[1])
    ok = w >= 0
    lo, hi = x.lo.reshape(-1)[np.where(ok, w, 0)], x.hi.reshape(-1)[np.where(ok, w, 0)]
    if how == "min":  # min(x) = -max(-x)
        lo, hi = -hi, -lo
    lo, hi = np.where(ok, lo, -np.inf), np.where(ok, hi, -np.inf)
    j = np.argmax(lo, axis=1)
    rows = np.arange(w.shape[0])
    sel = w[rows, j]
    others = hi.copy()
    others[rows, j] = -np.inf
    exact = lo[rows, j] >= others.max(axis=1)
    top = hi.max(axis=1)  # the constant bound of the max
    n_in = x.lo.size
    if how == "min":  # a·min(x) = (−a)·max(−x)
        a_lo, a_hi = -a_lo, -a_hi
    pos, neg = np.maximum(a_lo, 0.0), np.minimum(a_lo, 0.0)
    new_lo = scatter(pos + neg * exact, sel, n_in)
    d_lo = dot(neg * ~exact, top)
    pos, neg = np.maximum(a_hi, 0.0), np.minimum(a_hi, 0.0)
    new_hi = scatter(pos * exact + neg, sel, n_in)
    d_hi = dot(pos * ~exact, top)
    if how == "min":  # coefficients on −x, back to x
        return [(op.inputs[0], -new_lo, -new_hi)], d_lo, d_hi
    return [(op.inputs[0], new_lo, new_hi)], d_lo, d_hi


def average(op: Op, x: Box, a_lo: np.ndarray, a_hi: np.ndarray) -> Step:
    """A mean (or sum) over windows, with its float32 rounding as an additive term."""
    if not (np.all(np.isfinite(x.lo)) and np.all(np.isfinite(x.hi))):
        raise Stop
    w = windows(op, x.lo.shape, a_lo.shape[1])
    ok = w >= 0
    kk = w.shape[1]
    if op.kind == "reduce" and op.attrs.get("how") == "sum":
        div = np.ones(w.shape[0])
    elif op.kind == "avgpool" and not op.attrs.get("count_include_pad") and any(op.attrs.get("pads") or []):
        div = ok.sum(axis=1).astype(np.float64)
    else:
        div = np.full(w.shape[0], float(kk))
    mag = np.maximum(np.abs(x.lo), np.abs(x.hi)).reshape(-1)
    e = (np.where(ok, mag[np.where(ok, w, 0)], 0.0).sum(axis=1) / div) * (kk + 2) * EPS32 + TINY
    n_in = x.lo.size
    new_lo, new_hi = np.zeros((a_lo.shape[0], n_in)), np.zeros((a_hi.shape[0], n_in))
    for k in range(kk):
        col, fine = w[:, k], ok[:, k]  # one window position: each input element at most once
        new_lo[:, col[fine]] += a_lo[:, fine] / div[fine]
        new_hi[:, col[fine]] += a_hi[:, fine] / div[fine]
    return [(op.inputs[0], new_lo, new_hi)], -(np.abs(a_lo) @ e), np.abs(a_hi) @ e


def _spread(in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> np.ndarray:
    """For each output element, the input element a broadcast reads."""
    idx = np.arange(math.prod(in_shape), dtype=np.int64).reshape(in_shape)
    try:
        return np.broadcast_to(idx, out_shape).reshape(-1)
    except ValueError:
        raise Stop from None


def _wide(b: Box, out_shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    return np.broadcast_to(b.lo, out_shape).reshape(-1), np.broadcast_to(b.hi, out_shape).reshape(-1)


def add(op: Op, xs: list[Box], out_shape: tuple[int, ...], a_lo: np.ndarray, a_hi: np.ndarray) -> Step:
    if len(xs) != 2 or not all(np.all(np.isfinite(b.lo)) and np.all(np.isfinite(b.hi)) for b in xs):
        raise Stop
    e = np.full(a_lo.shape[1], TINY)
    parts = []
    for name, b in zip(op.inputs, xs, strict=True):
        lo, hi = _wide(b, out_shape)
        e = e + (np.abs(lo) + np.abs(hi)) * EPS32
        cols = _spread(b.lo.shape, out_shape)
        parts.append((name, scatter(a_lo, cols, b.lo.size), scatter(a_hi, cols, b.lo.size)))
    return parts, -(np.abs(a_lo) @ e), np.abs(a_hi) @ e


def mul(op: Op, xs: list[Box], out_shape: tuple[int, ...], a_lo: np.ndarray, a_hi: np.ndarray) -> Step:
    """McCormick planes of ``x·z`` over the box of both operands."""
    if len(xs) != 2 or not all(np.all(np.isfinite(b.lo)) and np.all(np.isfinite(b.hi)) for b in xs):
        raise Stop
    (lx, ux), (lz, uz) = _wide(xs[0], out_shape), _wide(xs[1], out_shape)
    corners = np.stack([lx * lz, lx * uz, ux * lz, ux * uz])
    e = np.max(np.abs(corners), axis=0) * 2 * EPS32 + TINY
    # lower plane: lz·x + lx·z − lx·lz; upper plane: uz·x + lx·z − lx·uz
    pos, neg = np.maximum(a_lo, 0.0), np.minimum(a_lo, 0.0)
    cx_lo, cz_lo = pos * lz + neg * uz, a_lo * lx
    d_lo = pos @ (-lx * lz) + neg @ (-lx * uz) - np.abs(a_lo) @ e
    pos, neg = np.maximum(a_hi, 0.0), np.minimum(a_hi, 0.0)
    cx_hi, cz_hi = pos * uz + neg * lz, a_hi * lx
    d_hi = pos @ (-lx * uz) + neg @ (-lx * lz) + np.abs(a_hi) @ e
    parts = []
    for name, b, c_lo, c_hi in zip(op.inputs, xs, (cx_lo, cz_lo), (cx_hi, cz_hi), strict=True):
        cols = _spread(b.lo.shape, out_shape)
        parts.append((name, scatter(c_lo, cols, b.lo.size), scatter(c_hi, cols, b.lo.size)))
    return parts, d_lo, d_hi


def concat(op: Op, xs: list[Box], a_lo: np.ndarray, a_hi: np.ndarray) -> Step:
    rank = xs[0].lo.ndim
    axis = int(op.attrs.get("axis", 1))
    axis = axis + rank if axis < 0 else axis
    if not 0 < axis < rank:
        raise Stop
    tags = [np.full(b.lo.shape, i, dtype=np.int64) for i, b in enumerate(xs)]
    idx = [np.arange(b.lo.size, dtype=np.int64).reshape(b.lo.shape) for b in xs]
    tag, where = np.concatenate(tags, axis).reshape(-1), np.concatenate(idx, axis).reshape(-1)
    if tag.size != a_lo.shape[1]:
        raise Stop
    parts = []
    for i, (name, b) in enumerate(zip(op.inputs, xs, strict=True)):
        cols = np.where(tag == i, where, -1)
        parts.append((name, scatter(a_lo, cols, b.lo.size), scatter(a_hi, cols, b.lo.size)))
    return parts, np.zeros(a_lo.shape[0]), np.zeros(a_hi.shape[0])
