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
:data:`MAX_DENSE` entries, or once a bound has produced :data:`MAX_WORK` coefficients: large
layers keep their interval bounds. Convolutions are substituted by transposed convolutions
of the coefficient rows, without forming their matrix. Float32 rounding of the
network is covered as in :mod:`.interval`: each affine op contributes its own rounding bound
``γ_n · (Σ|w||x| + |b|)`` as an additive error term, weighted by ``|A|``; the float64
arithmetic of the substitution errs by ~10⁻¹⁶ of the same magnitudes, covered 10⁹ times over.
"""

from __future__ import annotations

import math

import numpy as np

from ..edit.graph import Graph, Op
from . import linear_ops as lo_ops
from .interval import EPS32, TINY, Box, Gate, _align, _conv2d, propagate, self_gate
from .linear_ops import Step, Stop, dot
from .relax import Unrelaxed, relax, sampled

MAX_DENSE = 4_000_000  # entries of one substitution matrix
MAX_WORK = 10_000_000  # coefficient entries one bound may produce over all its substitutions
# a crossing ReLU's lower line: by name for all, or per ReLU op a [bounded elements, units] array
Lower = str | dict[str, np.ndarray]
ALPHA_UNITS = 256  # α-CROWN where at most this many ReLU units cross zero (and bounded elements)
ALPHA_STEPS = 12
ALPHA_WORK = 2_000_000  # bounded elements × values so far: one pass stays cheap
# lower lines of crossing ReLUs tried per bound (a cheap stand-in for optimising them, α-CROWN)
LOWER_LINES = ("adaptive", "flat")
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
        lo: np.ndarray = box.lo.reshape(-1)
        hi: np.ndarray = box.hi.reshape(-1)
        for lower in LOWER_LINES:  # every choice is sound: keep the best per element
            try:
                lo_m, hi_m = self.bound(op, box, env, lower)
            except Stop:
                continue
            lo, hi = np.maximum(lo, lo_m), np.minimum(hi, hi_m)
        if op.kind in ("linear", "conv"):
            hi = np.minimum(hi, self.optimise(op, box, env, hi))
        return Box(np.maximum(box.lo, lo.reshape(box.lo.shape)), np.minimum(box.hi, hi.reshape(box.hi.shape)))

    def optimise(self, op: Op, box: Box, env: dict[str, Box], hi: np.ndarray) -> np.ndarray:
        """Upper bounds with the crossing ReLUs' lower slopes optimised per bounded element (α-CROWN,
        Xu et al. 2021), where few units cross: signed steps along a finite-difference gradient.

        Every slope in [α, 1] gives a sound bound, so the best one met is kept whatever the search does.
        """
        n, at = hi.size, self.index[op.outputs[0]]
        cross: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for p in self.graph.ops:
            if (
                p.kind != "act"
                or p.attrs.get("act") not in ("relu", "leaky_relu")
                or self.index[p.outputs[0]] >= at
            ):
                continue
            x = env.get(p.inputs[0])
            if x is not None:
                lo_x, hi_x = x.lo.reshape(-1), x.hi.reshape(-1)
                c = np.flatnonzero((lo_x < 0) & (hi_x > 0))
                if c.size:
                    cross[p.name] = (c, np.where(hi_x >= -lo_x, 1.0, 0.0))
        total = sum(c.size for c, _ in cross.values())
        size = sum(b.lo.size for b in env.values())
        if not total or total > ALPHA_UNITS or n > ALPHA_UNITS or n * size > ALPHA_WORK:
            return hi
        if not np.all(np.isfinite(hi)):  # an unbounded side: nothing to search on
            return hi
        t = {k: np.tile(init, (n, 1)) for k, (_, init) in cross.items()}
        best, eta = hi.copy(), 0.5
        for _ in range(ALPHA_STEPS):
            base = self.bound(op, box, env, t)[1]
            best = np.minimum(best, base)
            grads = {k: np.zeros_like(v) for k, v in t.items()}
            for k, (c, _) in cross.items():
                for j in c:  # rows are independent: one pass gives column j for every row
                    old = t[k][:, j].copy()
                    d = np.where(old > 0.5, -0.01, 0.01)
                    t[k][:, j] = old + d
                    with np.errstate(invalid="ignore"):
                        grad = (self.bound(op, box, env, t)[1] - base) / d
                    grads[k][:, j] = np.where(np.isfinite(grad), grad, 0.0)
                    t[k][:, j] = old
            for k in t:
                t[k] = np.clip(t[k] - eta * np.sign(grads[k]), 0.0, 1.0)
            eta *= 0.6
        return np.minimum(best, self.bound(op, box, env, t)[1])

    def bound(
        self, op: Op, box: Box, env: dict[str, Box], lower: Lower = "adaptive"
    ) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bounds of ``op``'s output (interval ``box``) by back-substitution."""
        target = op.outputs[0]
        n = box.lo.size
        forms: dict[str, list[np.ndarray]] = {target: [np.eye(n), np.eye(n)]}
        c_lo, c_hi, c_mag = np.zeros(n), np.zeros(n), np.zeros(n)
        work = 0

        def box_of(v: str) -> Box:
            return box if v == target else env[v]

        while forms:
            v = max(forms, key=lambda k: self.index.get(k, -1))
            a_lo, a_hi = forms.pop(v)
            p = self.graph.producer.get(v)
            try:
                work += sum(n * env[i].lo.size for i in p.inputs if i in env) if p is not None else 0
                if p is None or work > MAX_WORK:
                    raise Stop
                parts, d_lo, d_hi = self.step(p, a_lo, a_hi, env, box_of(v).lo.shape, lower)
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

    def step(
        self, p: Op, a_lo: np.ndarray, a_hi: np.ndarray, env: dict[str, Box], out_shape: tuple, lower: Lower
    ) -> Step:
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
        if k == "conv":
            return _conv_step(p, x, out_shape, a_lo, a_hi)
        if k in ("linear", "bn", "scale"):
            m, b, e = self.affine(p, env)
            if m.ndim == 1:
                n_lo, n_hi = a_lo * m, a_hi * m
            else:
                n_lo, n_hi = a_lo @ m, a_hi @ m
            d_lo = a_lo @ b - np.abs(a_lo) @ e
            d_hi = a_hi @ b + np.abs(a_hi) @ e
            return [(ins[0], n_lo, n_hi)], d_lo, d_hi
        if k == "act":
            line = lower.get(p.name, "adaptive") if isinstance(lower, dict) else lower
            return _through(ins[0], a_lo, a_hi, *relax(p, x, env[p.outputs[0]], line))
        if k == "maxpool" or (k == "reduce" and p.attrs.get("how") in ("max", "min")):
            return lo_ops.extreme(p, x, a_lo, a_hi, "min" if p.attrs.get("how") == "min" else "max")
        if k in ("avgpool", "gap", "reduce"):
            return lo_ops.average(p, x, a_lo, a_hi)
        if k == "add":
            parts, d_lo, d_hi = lo_ops.add(p, xs, out_shape, a_lo, a_hi)
            return parts, d_lo, d_hi
        if k == "mul":
            gate = self_gate(self.graph, p)
            if gate is not None and gate.x in env:
                return _through(gate.x, a_lo, a_hi, *_gate_lines(gate, env[gate.x]))
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


def _through(
    x: str, a_lo: np.ndarray, a_hi: np.ndarray, sl: np.ndarray, il: np.ndarray, su: np.ndarray, iu: np.ndarray
) -> Step:
    """Coefficients through an elementwise function bounded by the lines ``sl·x + il``, ``su·x + iu``."""
    pos, neg = np.maximum(a_lo, 0.0), np.minimum(a_lo, 0.0)
    n_lo, d_lo = pos * sl + neg * su, dot(pos, il) + dot(neg, iu)
    pos, neg = np.maximum(a_hi, 0.0), np.minimum(a_hi, 0.0)
    n_hi, d_hi = pos * su + neg * sl, dot(pos, iu) + dot(neg, il)
    return [(x, n_lo, n_hi)], d_lo, d_hi


def _gate_lines(gate: Gate, x: Box) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sampled lines of ``x · clip(A·x + B)``: its slope is at most ``|clip| + |A|·|x|`` in size."""
    lo, hi = x.lo.reshape(-1), x.hi.reshape(-1)
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        raise Stop
    xm = np.maximum(np.abs(lo), np.abs(hi))
    g = gate.mag(xm)
    lip = g + abs(gate.a) * xm
    return sampled(gate.f, -lip, lip, gate.margin(xm, xm * g), lo, hi)


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


def _conv_geometry(op: Op, x: Box) -> tuple[np.ndarray, list[int], list[int], list[int], int, Box]:
    """Weight, strides, pads, dilations, groups and input box of a Conv as a 2-D one (1-D: height 1)."""
    w = op.params["weight"].value.astype(np.float64)
    nd = w.ndim - 2
    if nd not in (1, 2) or x.lo.ndim != nd + 2 or x.lo.shape[0] != 1:
        raise Stop
    strides = list(op.attrs.get("strides") or [1] * nd)
    dil = list(op.attrs.get("dilations") or [1] * nd)
    pads = list(op.attrs.get("pads") or [0] * (2 * nd))
    if nd == 1:
        w = w[:, :, None, :]
        strides, dil, pads = [1, *strides], [1, *dil], [0, pads[0], 0, pads[1]]
        x = Box(x.lo[:, :, None, :], x.hi[:, :, None, :])
    return w, strides, pads, dil, int(op.attrs.get("groups", 1)), x


def _conv_step(op: Op, x: Box, out_shape: tuple[int, ...], a_lo: np.ndarray, a_hi: np.ndarray) -> Step:
    """Coefficient rows through a Conv by a transposed convolution (no matrix is formed)."""
    if not (np.all(np.isfinite(x.lo)) and np.all(np.isfinite(x.hi))):
        raise Stop
    w, strides, pads, dil, groups, x2 = _conv_geometry(op, x)
    c, h, wd = x2.lo.shape[1:]
    o_n = w.shape[0]
    hw = a_lo.shape[1] // o_n
    if hw * o_n != a_lo.shape[1]:
        raise Stop
    mag = np.maximum(np.abs(x2.lo), np.abs(x2.hi))[0]
    fan = int(math.prod(w.shape[1:]))
    acc = _conv2d(mag, np.abs(w), strides, pads, dil, groups)
    if acc.size != a_lo.shape[1]:
        raise Stop
    bp = op.params.get("bias")
    bias = np.zeros(o_n) if bp is None else bp.value.astype(np.float64).reshape(-1)
    b_full = np.repeat(bias, hw)
    e = ((acc.reshape(o_n, -1) + np.abs(bias)[:, None]) * (fan + 2) * EPS32 + (fan + 2) * TINY).reshape(-1)
    ho, wo = acc.shape[1], acc.shape[2]
    parts = []
    for a in (a_lo, a_hi):
        parts.append(_conv_t(a.reshape(-1, o_n, ho, wo), w, strides, pads, dil, groups, (c, h, wd)))
    d_lo = a_lo @ b_full - np.abs(a_lo) @ e
    d_hi = a_hi @ b_full + np.abs(a_hi) @ e
    return [(op.inputs[0], parts[0], parts[1])], d_lo, d_hi


def _conv_t(
    a: np.ndarray,
    w: np.ndarray,
    strides: list[int],
    pads: list[int],
    dil: list[int],
    groups: int,
    in_chw: tuple[int, int, int],
) -> np.ndarray:
    """``[rows, O, Ho, Wo]`` coefficients on a Conv's output → ``[rows, C·H·W]`` on its input."""
    c, h, wd = in_chw
    top, left, bottom, right = pads
    buf = np.zeros((a.shape[0], c, h + top + bottom, wd + left + right))
    og, cg = w.shape[0] // groups, w.shape[1]
    n, ho, wo = a.shape[0], a.shape[2], a.shape[3]
    a5 = a.reshape(n, groups, og, ho, wo)
    w5 = w.reshape(groups, og, cg, w.shape[2], w.shape[3])
    for i in range(w.shape[2]):
        for j in range(w.shape[3]):
            r0, c0 = i * dil[0], j * dil[1]
            part = np.einsum("ngohw,goc->ngchw", a5, w5[:, :, :, i, j], optimize=True)
            buf[
                :,
                :,
                r0 : r0 + strides[0] * (ho - 1) + 1 : strides[0],
                c0 : c0 + strides[1] * (wo - 1) + 1 : strides[1],
            ] += part.reshape(n, groups * cg, ho, wo)
    return buf[:, :, top : top + h, left : left + wd].reshape(a.shape[0], -1)


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
