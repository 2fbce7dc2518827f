"""Linear relaxation bounds (CROWN-style back-substitution) beside the interval bounds.

The output of every Conv / Gemm / MatMul, residual Add, gate Mul and averaging op is bounded
twice: by intervals (:mod:`.interval`) and by substituting a linear form backwards over the
graph (Zhang et al. 2018). The form's coefficients are kept per value and visited in reverse
topological order, so a value read by several ops (a residual branch, a gate) collects the
coefficients of every reader before it is substituted. Affine ops (Conv, Gemm, MatMul,
BatchNorm, per-channel scales) substitute exactly; activations are replaced by a lower and
an upper line from their input's bounds (:mod:`.relax`); pools, means, Concat, Add and Mul
follow :mod:`.linear_ops`. Where a value cannot be passed (a graph input, an unsupported op,
a matrix too large) the form is evaluated on that value's box. The tighter of the two bounds
is kept per element, and later relaxations use it.

Matrices are dense (one sample, batch 1), so a substitution stops where one would exceed
:data:`MAX_DENSE` entries: large layers keep their interval bounds. Float32 rounding of the
network is covered as in :mod:`.interval`: each affine op contributes its own rounding bound
``γ_n · (Σ|w||x| + |b|)`` as an additive error term, weighted by ``|A|``; the float64
arithmetic of the substitution errs by ~10⁻¹⁶ of the same magnitudes, covered 10⁹ times over.
"""

from __future__ import annotations

import math

import numpy as np

from ..edit.graph import Graph, Op
from . import linear_ops as lo_ops
from .interval import EPS32, TINY, Box, _align, _patches, propagate
from .linear_ops import Step, Stop, dot
from .relax import Unrelaxed, relax

MAX_DENSE = 4_000_000  # entries of one substitution matrix
REFINED = ("linear", "conv", "add", "mul", "avgpool", "gap", "reduce")


def propagate_linear(
    graph: Graph, inputs: dict[str, tuple[float, float]], shapes: dict[str, tuple[int, ...]]
) -> dict[str, Box]:
    """Bounds of every value: intervals, tightened by linear relaxations (:data:`REFINED` ops)."""
    crown = _Crown(graph)
    return propagate(graph, inputs, shapes, refine=crown.refine)


class _Crown:
    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.index = {o: i for i, op in enumerate(graph.ops) for o in op.outputs}
        self.cache: dict[str, tuple[np.ndarray, np.ndarray, int]] = {}

    def refine(self, op: Op, box: Box, env: dict[str, Box]) -> Box:
        n = box.lo.size
        if op.kind not in REFINED or n == 0 or n * n > MAX_DENSE or not op.outputs:
            return box
        try:
            lo, hi = self.bound(op, box, env)
        except Stop:
            return box
        lo, hi = lo.reshape(box.lo.shape), hi.reshape(box.hi.shape)
        return Box(np.maximum(box.lo, lo), np.minimum(box.hi, hi))

    def bound(self, op: Op, box: Box, env: dict[str, Box]) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bounds of ``op``'s output (interval ``box``) by back-substitution."""
        target = op.outputs[0]
        n = box.lo.size
        forms: dict[str, list[np.ndarray]] = {target: [np.eye(n), np.eye(n)]}
        c_lo, c_hi, c_mag = np.zeros(n), np.zeros(n), np.zeros(n)

        def box_of(v: str) -> Box:
            return box if v == target else env[v]

        while forms:
            v = max(forms, key=lambda k: self.index.get(k, -1))
            a_lo, a_hi = forms.pop(v)
            p = self.graph.producer.get(v)
            try:
                if p is None:
                    raise Stop
                parts, d_lo, d_hi = self.step(p, a_lo, a_hi, env, box_of(v).lo.shape)
            except (Stop, Unrelaxed):
                x = box_of(v)
                c_lo += _concretize(a_lo, x, lower=True)
                c_hi += _concretize(a_hi, x, lower=False)
                continue
            c_lo += d_lo
            c_hi += d_hi
            c_mag += np.where(np.isfinite(d_lo), np.abs(d_lo), 0.0) + np.where(
                np.isfinite(d_hi), np.abs(d_hi), 0.0
            )
            for w, al, ah in parts:
                if w in forms:
                    forms[w][0] += al
                    forms[w][1] += ah
                else:
                    forms[w] = [al, ah]
        # the constants' float64 sums: a relative margin of their magnitudes
        c_lo = np.where(np.isnan(c_lo), -np.inf, c_lo - 1e-12 * c_mag)
        c_hi = np.where(np.isnan(c_hi), np.inf, c_hi + 1e-12 * c_mag)
        return c_lo, c_hi

    def step(self, p: Op, a_lo: np.ndarray, a_hi: np.ndarray, env: dict[str, Box], out_shape: tuple) -> Step:
        """Coefficients on ``p``'s inputs from those on its output (one substitution)."""
        ins = [i for i in p.inputs if i]
        if not ins or any(i not in env for i in ins):
            raise Stop
        xs = [env[i] for i in ins]
        if any(a_lo.shape[0] * x.lo.size > MAX_DENSE for x in xs):
            raise Stop
        k, x = p.kind, xs[0]
        if k in ("identity", "flatten") or (k == "reshape" and p.attrs.get("pure_reshape")):
            if x.lo.size != a_lo.shape[1]:
                raise Stop
            return [(ins[0], a_lo, a_hi)], np.zeros(a_lo.shape[0]), np.zeros(a_hi.shape[0])
        if k in ("linear", "conv", "bn", "scale"):
            m, b, e = self.affine(p, env)
            if m.ndim == 1:
                n_lo, n_hi = a_lo * m, a_hi * m
            else:
                n_lo, n_hi = a_lo @ m, a_hi @ m
            d_lo = a_lo @ b - np.abs(a_lo) @ e
            d_hi = a_hi @ b + np.abs(a_hi) @ e
            return [(ins[0], n_lo, n_hi)], d_lo, d_hi
        if k == "act":
            sl, il, su, iu = relax(p, x, env[p.outputs[0]])
            pos, neg = np.maximum(a_lo, 0.0), np.minimum(a_lo, 0.0)
            n_lo, d_lo = pos * sl + neg * su, dot(pos, il) + dot(neg, iu)
            pos, neg = np.maximum(a_hi, 0.0), np.minimum(a_hi, 0.0)
            n_hi, d_hi = pos * su + neg * sl, dot(pos, iu) + dot(neg, il)
            return [(ins[0], n_lo, n_hi)], d_lo, d_hi
        if k == "maxpool" or (k == "reduce" and p.attrs.get("how") in ("max", "min")):
            return lo_ops.extreme(p, x, a_lo, a_hi, "min" if p.attrs.get("how") == "min" else "max")
        if k in ("avgpool", "gap", "reduce"):
            return lo_ops.average(p, x, a_lo, a_hi)
        if k == "add":
            parts, d_lo, d_hi = lo_ops.add(p, xs, out_shape, a_lo, a_hi)
            return parts, d_lo, d_hi
        if k == "mul":
            return lo_ops.mul(p, xs, out_shape, a_lo, a_hi)
        if k == "concat":
            return lo_ops.concat(p, xs, a_lo, a_hi)
        raise Stop

    def affine(self, op: Op, env: dict[str, Box]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``y = M x + b + δ`` with ``|δ| <= e`` (float32 rounding), flattened over one sample.

        ``M`` is a matrix, or the vector of its diagonal for elementwise ops.
        """
        x = env[op.inputs[0]]
        if not (np.all(np.isfinite(x.lo)) and np.all(np.isfinite(x.hi))):
            raise Stop
        if op.name not in self.cache or op.kind in ("bn", "scale"):
            self.cache[op.name] = _matrix(op, x.lo.shape, self.graph.shapes.get(op.outputs[0]))
        m, b, fan = self.cache[op.name]
        mag = np.maximum(np.abs(x.lo), np.abs(x.hi)).reshape(-1)
        bmag = np.abs(b) if op.kind != "bn" else _bn_bias_mag(op, x.lo.shape)
        am = np.abs(m) * mag if m.ndim == 1 else np.abs(m) @ mag
        e = (am + bmag) * (fan + 2) * EPS32 + (fan + 2) * TINY
        return m, b, e


def _matrix(
    op: Op, in_shape: tuple[int, ...], out_shape: tuple[int, ...] | None
) -> tuple[np.ndarray, np.ndarray, int]:
    n_in = math.prod(in_shape)
    if op.kind == "linear":
        if op.params["weight"].value.size > MAX_DENSE:
            raise Stop
        w = op.params["weight"].value.astype(np.float64)
        wt = (w.T if op.attrs.get("layout") == "oi" else w) * float(op.attrs.get("alpha", 1.0))  # [I, O]
        if len(in_shape) != 2 or wt.shape[0] != n_in or wt.size > MAX_DENSE:
            raise Stop  # tokens (one matrix per token would be needed), or too large to substitute
        bp = op.params.get("bias")
        bias = np.zeros(wt.shape[1])
        if bp is not None:
            bias = bias + float(op.attrs.get("beta", 1.0)) * bp.value.astype(np.float64).reshape(-1)
        return wt.T, bias, wt.shape[0]
    if op.kind == "conv":
        return _conv_matrix(op, in_shape, out_shape)
    a, b = _elementwise(op, in_shape)
    return a, b, 6


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
            raise Stop
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
        raise Stop from None


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
        raise Stop
    n_in, n_out = math.prod(in_shape), math.prod(out_shape)
    if n_in * n_out > MAX_DENSE:
        raise Stop
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
        raise Stop
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


def _concretize(a: np.ndarray, x: Box, lower: bool) -> np.ndarray:
    """The least (``lower``) or greatest value of ``a @ x`` over the box."""
    lo, hi = x.lo.reshape(-1), x.hi.reshape(-1)
    pos, neg = np.maximum(a, 0.0), np.minimum(a, 0.0)
    first, second = (lo, hi) if lower else (hi, lo)
    with np.errstate(invalid="ignore"):
        terms = pos * np.where(pos != 0, first, 0.0) + neg * np.where(neg != 0, second, 0.0)
    val = terms.sum(axis=1)
    # float64 evaluation of the form: a relative margin of its magnitude
    mag = np.abs(a) @ np.where(np.isfinite(lo) & np.isfinite(hi), np.maximum(np.abs(lo), np.abs(hi)), 0.0)
    margin = 1e-12 * mag
    val = val - margin if lower else val + margin
    return np.where(np.isnan(val), -np.inf if lower else np.inf, val)
