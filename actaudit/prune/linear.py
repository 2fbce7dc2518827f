"""Linear relaxation bounds (CROWN-style back-substitution) beside the interval bounds.

Every Conv / Gemm / MatMul output is bounded twice: by intervals (:mod:`.interval`) and by
substituting its affine map backwards through earlier affine ops (Conv, Gemm, MatMul,
BatchNorm, per-channel scales) and ReLU/LeakyReLU, each activation replaced by a linear
lower and upper relaxation from its input's bounds (Zhang et al. 2018), until a value the
substitution cannot pass (a graph input, a pool, a sigmoid, a residual add); there the
linear form is evaluated on that value's box. The tighter of the two bounds is kept per
element, and later relaxations use it.

Matrices are dense (one sample, batch 1), so a substitution stops where one would exceed
:data:`MAX_DENSE` entries: large layers keep their interval bounds. Float32 rounding of the
network is covered as in :mod:`.interval`: each affine op contributes its own rounding bound
``γ_n · (Σ|w||x| + |b|)`` as an additive error term, weighted by ``|A|``.
"""

from __future__ import annotations

import math

import numpy as np

from ..edit.graph import Graph, Op
from .interval import EPS32, TINY, Box, _align, _patches, propagate

MAX_DENSE = 4_000_000  # entries of one substitution matrix
_PASS = ("identity", "flatten")


class _Stop(Exception):
    pass


def propagate_linear(
    graph: Graph, inputs: dict[str, tuple[float, float]], shapes: dict[str, tuple[int, ...]]
) -> dict[str, Box]:
    """Bounds of every value: intervals, tightened by linear relaxations at every Conv/Gemm/MatMul."""
    crown = _Crown(graph)
    return propagate(graph, inputs, shapes, refine=crown.refine)


class _Crown:
    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.cache: dict[str, tuple[np.ndarray, np.ndarray, int]] = {}

    def refine(self, op: Op, box: Box, env: dict[str, Box]) -> Box:
        if op.kind not in ("linear", "conv") or box.lo.size == 0:
            return box
        try:
            lo, hi = self.bound(op, env)
        except _Stop:
            return box
        lo, hi = lo.reshape(box.lo.shape), hi.reshape(box.hi.shape)
        return Box(np.maximum(box.lo, lo), np.minimum(box.hi, hi))

    def bound(self, op: Op, env: dict[str, Box]) -> tuple[np.ndarray, np.ndarray]:
        m, b, e = self.affine(op, env)
        a_lo, a_hi = m.copy(), m.copy()
        c_lo, c_hi = b - e, b + e
        v = op.inputs[0]
        while True:
            p = self.graph.producer.get(v)
            if p is None or a_lo.shape[0] * env[v].lo.size > MAX_DENSE:
                break
            try:
                if p.kind in _PASS or (p.kind == "reshape" and p.attrs.get("pure_reshape")):
                    pass
                elif p.kind in ("linear", "conv", "bn", "scale"):
                    m2, b2, e2 = self.affine(p, env)
                    c_lo = c_lo + a_lo @ b2 - np.abs(a_lo) @ e2
                    c_hi = c_hi + a_hi @ b2 + np.abs(a_hi) @ e2
                    a_lo, a_hi = a_lo @ m2, a_hi @ m2
                elif p.kind == "act":
                    a_lo, c_lo, a_hi, c_hi = _through_act(p, env[p.inputs[0]], a_lo, c_lo, a_hi, c_hi)
                else:
                    break
            except _Stop:
                break
            v = p.inputs[0]
        x = env[v]
        return _concretize(a_lo, c_lo, x, lower=True), _concretize(a_hi, c_hi, x, lower=False)

    def affine(self, op: Op, env: dict[str, Box]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``y = M x + b + δ`` with ``|δ| <= e`` (float32 rounding), flattened over one sample."""
        x = env[op.inputs[0]]
        if not (np.all(np.isfinite(x.lo)) and np.all(np.isfinite(x.hi))):
            raise _Stop
        if op.name not in self.cache or op.kind in ("bn", "scale"):
            self.cache[op.name] = _matrix(op, x.lo.shape, self.graph.shapes.get(op.outputs[0]))
        m, b, fan = self.cache[op.name]
        mag = np.maximum(np.abs(x.lo), np.abs(x.hi)).reshape(-1)
        bmag = np.abs(b) if op.kind != "bn" else _bn_bias_mag(op, x.lo.shape)
        e = (np.abs(m) @ mag + bmag) * (fan + 2) * EPS32 + (fan + 2) * TINY
        return m, b, e


def _matrix(
    op: Op, in_shape: tuple[int, ...], out_shape: tuple[int, ...] | None
) -> tuple[np.ndarray, np.ndarray, int]:
    n_in = math.prod(in_shape)
    if op.kind == "linear":
        if op.params["weight"].value.size > MAX_DENSE:
            raise _Stop
        w = op.params["weight"].value.astype(np.float64)
        wt = (w.T if op.attrs.get("layout") == "oi" else w) * float(op.attrs.get("alpha", 1.0))  # [I, O]
        if len(in_shape) != 2 or wt.shape[0] != n_in or wt.size > MAX_DENSE:
            raise _Stop  # tokens (one matrix per token would be needed), or too large to substitute
        bp = op.params.get("bias")
        bias = np.zeros(wt.shape[1])
        if bp is not None:
            bias = bias + float(op.attrs.get("beta", 1.0)) * bp.value.astype(np.float64).reshape(-1)
        return wt.T, bias, wt.shape[0]
    if op.kind == "conv":
        return _conv_matrix(op, in_shape, out_shape)
    a, b = _elementwise(op, in_shape)
    m = np.diag(a)
    if m.size > MAX_DENSE:
        raise _Stop
    return m, b, 6


def _elementwise(op: Op, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    rank = len(shape)
    if op.kind == "bn":
        p = op.params
        a = p["scale"].value.astype(np.float64) / np.sqrt(
            p["var"].value.astype(np.float64) + float(op.attrs.get("eps", 1e-5))
        )
        b = p["bias"].value.astype(np.float64) - a * p["mean"].value.astype(np.float64)
        cs = [1, -1] + [1] * (rank - 2)
        a, b = a.reshape(cs), b.reshape(cs)
    else:
        c = _align(op.params["c"].value, rank)
        one, zero = np.ones([1] * rank), np.zeros([1] * rank)
        form = op.attrs.get("form", "add")
        if form == "div" and np.any(c == 0):
            raise _Stop
        a, b = {
            "add": (one, c),
            "sub": (one, -c),
            "rsub": (-one, c),
            "mul": (c, zero),
            "div": (1.0 / np.where(c == 0, 1.0, c), zero),
        }[form]
    try:
        return np.broadcast_to(a, shape).reshape(-1), np.broadcast_to(b, shape).reshape(-1)
    except ValueError:
        raise _Stop from None


def _bn_bias_mag(op: Op, shape: tuple[int, ...]) -> np.ndarray:
    p = op.params
    a = p["scale"].value.astype(np.float64) / np.sqrt(
        p["var"].value.astype(np.float64) + float(op.attrs.get("eps", 1e-5))
    )
    mag = np.abs(p["bias"].value.astype(np.float64)) + np.abs(a * p["mean"].value.astype(np.float64))
    return np.broadcast_to(mag.reshape([1, -1] + [1] * (len(shape) - 2)), shape).reshape(-1)


def _conv_matrix(
    op: Op, in_shape: tuple[int, ...], out_shape: tuple[int, ...] | None
) -> tuple[np.ndarray, np.ndarray, int]:
    w = op.params["weight"].value.astype(np.float64)
    if w.ndim != 4 or len(in_shape) != 4 or out_shape is None or len(out_shape) != 4:
        raise _Stop
    n_in, n_out = math.prod(in_shape), math.prod(out_shape)
    if n_in * n_out > MAX_DENSE:
        raise _Stop
    groups = int(op.attrs.get("groups", 1))
    strides = list(op.attrs.get("strides") or [1, 1])
    dil = list(op.attrs.get("dilations") or [1, 1])
    pads = list(op.attrs.get("pads") or [0, 0, 0, 0])
    idx = np.arange(n_in, dtype=np.float64).reshape(in_shape[1:])
    cols = _patches(idx, (w.shape[2], w.shape[3]), strides, pads, dil, -1.0).astype(np.int64)
    o_n, cg = w.shape[0], w.shape[1]
    og = o_n // groups
    hw = cols.shape[3] * cols.shape[4]
    if o_n * hw != n_out:
        raise _Stop
    m = np.zeros((n_out, n_in))
    rows = np.arange(hw)
    for o in range(o_n):
        g = o // og
        for cl in range(cg):
            for i in range(w.shape[2]):
                for j in range(w.shape[3]):
                    c = cols[g * cg + cl, i, j].reshape(-1)
                    ok = c >= 0
                    m[o * hw + rows[ok], c[ok]] += w[o, cl, i, j]
    b = op.params.get("bias")
    bias = np.zeros(n_out) if b is None else np.repeat(b.value.astype(np.float64).reshape(-1), hw)
    return m, bias, int(math.prod(w.shape[1:]))


def _relax(op: Op, x: Box) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per element: lower (slope, intercept) and upper (slope, intercept) of the activation on [l, u]."""
    name = str(op.attrs.get("act"))
    if name == "clip" and (op.attrs.get("lo"), op.attrs.get("hi")) == (0.0, math.inf):
        name = "relu"
    if name == "relu":
        alpha = 0.0
    elif name == "leaky_relu":
        alpha = float(op.attrs.get("alpha", 0.01))
        if not 0 <= alpha <= 1:
            raise _Stop
    elif name == "identity":
        one = np.ones(x.lo.size)
        return one, 0 * one, one, 0 * one
    else:
        raise _Stop
    lo, hi = x.lo.reshape(-1), x.hi.reshape(-1)
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        raise _Stop
    on, off = lo >= 0, hi <= 0
    cross = ~on & ~off
    span = np.where(cross, hi - lo, 1.0)
    # upper: the chord from (l, αl) to (u, u); lower: slope 1 or α, whichever hugs the larger side
    su = np.where(on, 1.0, np.where(off, alpha, (hi - alpha * lo) / span))
    iu = np.where(cross, lo * (alpha - su), 0.0)
    sl = np.where(on, 1.0, np.where(off, alpha, np.where(hi >= -lo, 1.0, alpha)))
    # the chord is rounded in float64: lift it by a relative margin
    iu = iu + 1e-12 * (np.abs(lo) + np.abs(hi))
    return sl, np.zeros_like(sl), su, iu


def _through_act(
    p: Op, x: Box, a_lo: np.ndarray, c_lo: np.ndarray, a_hi: np.ndarray, c_hi: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    sl, il, su, iu = _relax(p, x)
    pos, neg = np.maximum(a_lo, 0.0), np.minimum(a_lo, 0.0)
    n_lo, k_lo = pos * sl + neg * su, c_lo + pos @ il + neg @ iu
    pos, neg = np.maximum(a_hi, 0.0), np.minimum(a_hi, 0.0)
    n_hi, k_hi = pos * su + neg * sl, c_hi + pos @ iu + neg @ il
    return n_lo, k_lo, n_hi, k_hi


def _concretize(a: np.ndarray, c: np.ndarray, x: Box, lower: bool) -> np.ndarray:
    lo, hi = x.lo.reshape(-1), x.hi.reshape(-1)
    pos, neg = np.maximum(a, 0.0), np.minimum(a, 0.0)
    first, second = (lo, hi) if lower else (hi, lo)
    with np.errstate(invalid="ignore"):
        terms = pos * np.where(pos != 0, first, 0.0) + neg * np.where(neg != 0, second, 0.0)
    val = terms.sum(axis=1) + c
    # float64 evaluation of the form: a relative margin of its magnitude
    mag = np.abs(a) @ np.where(np.isfinite(lo), np.maximum(np.abs(lo), np.abs(hi)), 0.0) + np.abs(c)
    margin = 1e-12 * mag
    val = val - margin if lower else val + margin
    return np.where(np.isnan(val), -np.inf if lower else np.inf, val)
