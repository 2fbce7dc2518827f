"""Sound interval bounds through a :class:`~actaudit.edit.graph.Graph`, for one sample of an input box.

Each value gets elementwise bounds ``lo <= v <= hi`` (float64, batch axis of 1) that hold
for every input in the box. Affine ops (Conv, Gemm/MatMul, BatchNorm, per-channel scale)
use the positive and negative parts of their weights, so a zero weight contributes
exactly zero even against an infinite bound; monotone activations map the bounds; max and
average pooling, Concat and Flatten are exact. An op the analysis does not know gives
infinite bounds: never a wrong proof, only a missing one.

The network itself computes in float32, whose rounding can land on the other side of a
bound: every affine output is widened by ``γ_n · Σ|w||x|`` with ``γ_n = (n + 2)·2⁻²³``
for fan-in ``n`` (a classical bound on any summation order of a float32 dot product,
doubled) plus ``(n + 2)·2⁻¹²⁵`` (runtimes flush subnormals to zero); batch norm's folded
bias by the magnitude of its terms, not of their difference; transcendental activations
by a few ulps plus 2⁻²⁰ (runtimes approximate them); the input box outward to float32,
and clamp limits on both sides of their float32 rounding. The property tests in
``tests/prune/test_bounds_property*.py`` check every rule against onnxruntime and torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..edit.graph import Graph, Op

EPS32 = 2.0**-23
ABS_ACT = 2.0**-20
TINY = 2.0**-125  # twice the smallest normal float32
MONOTONE = ("relu", "clip", "leaky_relu", "tanh", "sigmoid", "elu", "softplus", "hardsigmoid", "identity")


@dataclass
class Box:
    lo: np.ndarray
    hi: np.ndarray

    @classmethod
    def unbounded(cls, shape: tuple[int, ...]) -> Box:
        return cls(np.full(shape, -np.inf), np.full(shape, np.inf))


Refine = Callable[[Op, Box, dict[str, Box]], Box]


def propagate(
    graph: Graph,
    inputs: dict[str, tuple[float, float]],
    shapes: dict[str, tuple[int, ...]],
    refine: Refine | None = None,
) -> dict[str, Box]:
    """Bounds of every value ``graph`` computes from ``inputs`` (name -> (low, high)) of ``shapes``.

    ``refine(op, box, env)`` may tighten each op's box (linear relaxations, :mod:`.linear`)
    before later ops read it.
    """
    env: dict[str, Box] = {}
    for name in graph.inputs:
        shape = shapes[name]
        lo, hi = outward32(*inputs.get(name, (-math.inf, math.inf)))
        env[name] = Box(np.full(shape, lo), np.full(shape, hi))
    for op in graph.ops:
        args = [env.get(i) for i in op.inputs if i]
        out_shape = graph.shapes.get(op.outputs[0]) if op.outputs else None
        gate = self_gate(graph, op)
        box: Box | None
        try:
            if gate is not None and gate.x in env:
                box = gate.box(env[gate.x])
            else:
                box = _step(op, args, out_shape) if args and all(a is not None for a in args) else None
        except _Unknown:
            box = None
        if box is None and out_shape is not None:
            box = Box.unbounded(out_shape)
        if box is not None:
            box.lo = np.where(np.isnan(box.lo), -np.inf, box.lo)
            box.hi = np.where(np.isnan(box.hi), np.inf, box.hi)
            if refine is not None:
                box = refine(op, box, env)
            for o in op.outputs[:1]:
                env[o] = box
    return env


@dataclass
class Gate:
    """``x · clip(A·x + B, lo, hi)``: a Mul of a value by a clipped affine function of itself.

    Exporters write HardSwish so (``x · Clip(x + 3, 0, 6) / 6``), and ``x · hardsigmoid(x)``,
    ``x · relu(x)`` have the same form. As a product of two intervals it squares the bound;
    as a function of ``x`` alone it is piecewise quadratic, with its extremes at the ends of
    the interval, the two kinks and the vertex.
    """

    x: str
    a: float
    b: float
    lo: float
    hi: float

    def f(self, v: np.ndarray) -> np.ndarray:
        return v * np.clip(self.a * v + self.b, self.lo, self.hi)

    def mag(self, xm: np.ndarray) -> np.ndarray:
        """A bound of ``|clip(A·x + B)|`` for ``|x| <= xm``."""
        lim = max((abs(v) for v in (self.lo, self.hi) if math.isfinite(v)), default=0.0)
        return np.maximum(abs(self.a) * xm + abs(self.b), lim)

    def margin(self, xm: np.ndarray, hm: np.ndarray) -> np.ndarray:
        """Float32 rounding of the runtime's scale, clip and product, for ``|x| <= xm``, ``|h| <= hm``."""
        err_g = 8 * EPS32 * self.mag(xm) + ABS_ACT + 2 * TINY
        return xm * err_g + 4 * EPS32 * (hm + xm * err_g) + TINY

    def box(self, x: Box) -> Box:
        xl, xu = x.lo, x.hi
        if not (np.all(np.isfinite(xl)) and np.all(np.isfinite(xu))):
            raise _Unknown
        cands = [xl, xu]
        if self.a != 0:
            cands += [
                np.clip(np.full(xl.shape, t), xl, xu)
                for t in ((self.lo - self.b) / self.a, (self.hi - self.b) / self.a, -self.b / (2 * self.a))
                if math.isfinite(t)
            ]
        with np.errstate(invalid="ignore"):
            vals = np.stack([self.f(c) for c in cands])
        lo, hi = vals.min(axis=0), vals.max(axis=0)
        m = self.margin(np.maximum(np.abs(xl), np.abs(xu)), np.maximum(np.abs(lo), np.abs(hi)))
        return Box(lo - m, hi + m)


_GATE_ACTS = ("clip", "relu", "hardsigmoid")


def self_gate(graph: Graph, op: Op) -> Gate | None:
    """The :class:`Gate` a ``mul`` op computes, if it is one."""
    if op.kind != "mul" or len(op.inputs) != 2 or op.inputs[0] == op.inputs[1]:
        return None
    for x, y in (op.inputs, op.inputs[::-1]):
        g = graph.producer.get(y)
        if g is None or g.kind != "act" or g.attrs.get("act") not in _GATE_ACTS or not g.inputs:
            continue
        name = g.attrs["act"]
        if name == "hardsigmoid":
            ga, gb, lo, hi = float(g.attrs.get("alpha", 0.2)), float(g.attrs.get("beta", 0.5)), 0.0, 1.0
        else:
            ga, gb = 1.0, 0.0
            lo, hi = (
                (0.0, math.inf)
                if name == "relu"
                else (float(g.attrs.get("lo", -math.inf)), float(g.attrs.get("hi", math.inf)))
            )
        t = g.inputs[0]
        a, b = 1.0, 0.0
        s = graph.producer.get(t)
        if (
            t != x
            and s is not None
            and s.kind == "scale"
            and s.inputs[0] == x
            and s.params["c"].value.size == 1
        ):
            c = float(s.params["c"].value.reshape(()))
            form = s.attrs.get("form", "add")
            a, b = {"add": (1.0, c), "sub": (1.0, -c), "rsub": (-1.0, c), "mul": (c, 0.0)}.get(
                form, (0.0, 0.0)
            )
            if form == "div" and c != 0:
                a = 1.0 / c
            t = x
        if t != x or a == 0 or not (lo <= hi):
            continue
        return Gate(x, ga * a, ga * b + gb, lo, hi)
    return None


def outward32(lo: float, hi: float) -> tuple[float, float]:
    """The box widened to the nearest float32 values outside it: a float32 input rounded from a
    value inside the box (0.1 is not a float32) stays inside."""
    lo32, hi32 = np.float32(lo), np.float32(hi)
    if float(lo32) > lo:
        lo32 = np.nextafter(lo32, np.float32(-np.inf))
    if float(hi32) < hi:
        hi32 = np.nextafter(hi32, np.float32(np.inf))
    return float(lo32), float(hi32)


def _both32(v: float) -> tuple[float, float]:
    """``v`` and its float32 rounding, lower first."""
    r = float(np.float32(v)) if math.isfinite(v) else v
    return min(v, r), max(v, r)


class _Unknown(Exception):
    pass


def _step(op: Op, args: list[Any], out_shape: tuple[int, ...] | None) -> Box | None:
    k = op.kind
    x: Box = args[0]
    if k == "identity":
        return Box(x.lo, x.hi)
    if k == "conv":
        return _conv(op, x)
    if k == "linear":
        return _linear(op, x)
    if k == "bn":
        return _bn(op, x)
    if k == "scale":
        return _scale(op, x)
    if k == "act":
        return _act(op, x)
    if k == "add":
        y: Box = args[1]
        lo, hi = x.lo + y.lo, x.hi + y.hi
        return _widen(Box(lo, hi), (np.abs(x.lo) + np.abs(x.hi) + np.abs(y.lo) + np.abs(y.hi)) * EPS32)
    if k == "mul":
        y = args[1]
        with np.errstate(invalid="ignore"):
            prods = [p * q for p in (x.lo, x.hi) for q in (y.lo, y.hi)]
        lo = np.minimum.reduce(prods)  # a NaN (0 * inf) stays NaN: propagate() makes it unbounded
        hi = np.maximum.reduce(prods)
        mag = np.maximum(np.abs(lo), np.abs(hi))
        return _widen(Box(lo, hi), mag * 2 * EPS32)
    if k == "concat":
        axis = int(op.attrs.get("axis", 1))
        return Box(np.concatenate([a.lo for a in args], axis), np.concatenate([a.hi for a in args], axis))
    if k == "flatten":
        axis = int(op.attrs.get("axis", 1))
        flat = (math.prod(x.lo.shape[:axis]), -1)
        return Box(x.lo.reshape(flat), x.hi.reshape(flat))
    if k == "reshape":
        if out_shape is not None and math.prod(out_shape) == x.lo.size and op.attrs.get("pure_reshape"):
            return Box(x.lo.reshape(out_shape), x.hi.reshape(out_shape))
        if out_shape is not None and _uniform(x):
            return Box(np.full(out_shape, x.lo.flat[0]), np.full(out_shape, x.hi.flat[0]))
        raise _Unknown
    if k == "maxpool":
        return Box(_pool(x.lo, op, "max"), _pool(x.hi, op, "max"))
    if k == "avgpool":
        # a float32 mean of k values errs by at most (k + 1) ulps of the mean magnitude (k + 2: margin)
        kk = math.prod(int(i) for i in op.attrs.get("kernel", [1]))
        mag = _pool(np.maximum(np.abs(x.lo), np.abs(x.hi)), op, "avg")
        return _widen(Box(_pool(x.lo, op, "avg"), _pool(x.hi, op, "avg")), mag * (kk + 2) * EPS32)
    if k == "reduce":
        return _reduce(op, x)
    if k == "gap":
        axes = tuple(range(2, x.lo.ndim))
        attrs = {"how": "mean", "keepdims": op.attrs.get("keepdims", True), "axes": axes}
        return _reduce(Op(op.name, "reduce", op.inputs, op.outputs, attrs), x) if axes else Box(x.lo, x.hi)
    return None


def _bn(op: Op, x: Box) -> Box:
    p = op.params
    a = p["scale"].value.astype(np.float64) / np.sqrt(
        p["var"].value.astype(np.float64) + float(op.attrs.get("eps", 1e-5))
    )
    beta, am = p["bias"].value.astype(np.float64), a * p["mean"].value.astype(np.float64)
    shape = [1, -1] + [1] * (x.lo.ndim - 2)
    # runtimes fold beta - a * mean in float32: its rounding scales with |beta| + |a * mean|,
    # not with the (possibly cancelled) difference
    return _affine_elementwise(
        x,
        a.reshape(shape),
        (beta - am).reshape(shape),
        fan=6,
        bmag=(np.abs(beta) + np.abs(am)).reshape(shape),
    )


def _scale(op: Op, x: Box) -> Box:
    rank = x.lo.ndim
    c = _align(op.params["c"].value, rank)
    one, zero = np.ones([1] * rank), np.zeros([1] * rank)
    form = op.attrs.get("form", "add")
    with np.errstate(divide="ignore"):
        a, b = {
            "add": (one, c),
            "sub": (one, -c),
            "rsub": (-one, c),
            "mul": (c, zero),
            "div": (1.0 / c, zero),
        }[form]
    if not np.all(np.isfinite(a)):
        raise _Unknown
    return _affine_elementwise(x, a, b, fan=2)


def _reduce(op: Op, x: Box) -> Box:
    axes = tuple(int(a) for a in op.attrs.get("axes", ()))
    if not axes or 0 in axes or any(a >= x.lo.ndim for a in axes):
        raise _Unknown
    keep, how = bool(op.attrs.get("keepdims", True)), str(op.attrs.get("how", ""))
    if how == "max":
        return Box(np.max(x.lo, axis=axes, keepdims=keep), np.max(x.hi, axis=axes, keepdims=keep))
    if how == "min":
        return Box(np.min(x.lo, axis=axes, keepdims=keep), np.min(x.hi, axis=axes, keepdims=keep))
    if how not in ("mean", "sum"):
        raise _Unknown
    n = math.prod(x.lo.shape[a] for a in axes)
    div = float(n) if how == "mean" else 1.0
    lo, hi = np.sum(x.lo, axis=axes, keepdims=keep) / div, np.sum(x.hi, axis=axes, keepdims=keep) / div
    mag = np.sum(np.maximum(np.abs(x.lo), np.abs(x.hi)), axis=axes, keepdims=keep) / div
    return _widen(Box(lo, hi), mag * (n + 2) * EPS32)


def _uniform(x: Box) -> bool:
    return bool(x.lo.size) and bool(np.all(x.lo == x.lo.flat[0]) and np.all(x.hi == x.hi.flat[0]))


def _align(a: np.ndarray, rank: int) -> np.ndarray:
    a = a.astype(np.float64)
    return a.reshape([1] * (rank - a.ndim) + list(a.shape)) if a.ndim < rank else a


def _widen(b: Box, err: np.ndarray) -> Box:
    # + TINY: runtimes flush subnormal products and sums to zero, an absolute error no
    # relative bound covers
    err = np.where(np.isfinite(err), err, 0.0) + TINY
    return Box(b.lo - err, b.hi + err)


def _mul_interval(a: np.ndarray, x: Box) -> Box:
    """a * [lo, hi] with a = 0 giving exactly 0 whatever the bound."""
    with np.errstate(invalid="ignore"):
        p, q = a * x.lo, a * x.hi
    zero = a == 0
    lo = np.where(zero, 0.0, np.minimum(p, q))
    hi = np.where(zero, 0.0, np.maximum(p, q))
    return Box(lo, hi)


def _affine_elementwise(
    x: Box, a: np.ndarray, b: np.ndarray, fan: int, bmag: np.ndarray | None = None
) -> Box:
    m = _mul_interval(a, x)
    lo, hi = m.lo + b, m.hi + b
    mag = np.maximum(np.abs(m.lo), np.abs(m.hi)) + (np.abs(b) if bmag is None else bmag)
    return _widen(Box(lo, hi), mag * (fan + 2) * EPS32)


# activations that fall to one minimum and rise after it: (argmin, a value at or below the minimum,
# absolute margin); GELU's covers both its erf and tanh forms (they differ by < 5e-4)
UNIMODAL = {
    "hardswish": (-1.5, -0.375, ABS_ACT),
    "silu": (-1.2784645, -0.2784646, ABS_ACT),
    "gelu": (-0.752, -0.17005, 1e-3),
}


def _unimodal(name: str, x: Box) -> Box:
    xm, fmin, absm = UNIMODAL[name]

    def f(v: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore", invalid="ignore"):
            if name == "hardswish":
                y = v * np.clip(v + 3.0, 0.0, 6.0) / 6.0
            elif name == "silu":
                y = v / (1.0 + np.exp(-v))
            else:
                y = 0.5 * v * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (v + 0.044715 * v**3)))
        return np.where(np.isneginf(v), 0.0, y)  # -inf · 0 is 0 in the limit

    a, b = f(x.lo), f(x.hi)
    # near the minimum (within 1e-3 of its argmin), its value: soundly below either side
    lo = np.where(
        (x.lo <= xm + 1e-3) & (x.hi >= xm - 1e-3), np.minimum(fmin, np.minimum(a, b)), np.minimum(a, b)
    )
    hi = np.maximum(a, b)
    ulp = 8 * EPS32 * (np.abs(lo) + np.abs(hi)) + absm
    return Box(lo - ulp, hi + ulp)


def _act(op: Op, x: Box) -> Box:
    name = str(op.attrs.get("act", ""))
    if name in UNIMODAL:
        return _unimodal(name, x)
    if name not in MONOTONE:
        raise _Unknown
    if name == "clip":
        # the runtime clamps at limits rounded to float32 (to nearest: either side of the attribute);
        # clip is monotone in its limits too, so the lower bound takes the lower roundings
        a, b = float(op.attrs.get("lo", -math.inf)), float(op.attrs.get("hi", math.inf))
        (a_dn, a_up), (b_dn, b_up) = _both32(a), _both32(b)
        return Box(np.clip(x.lo, a_dn, max(a_dn, b_dn)), np.clip(x.hi, a_up, max(a_up, b_up)))
    f = _monotone(op, name)
    with np.errstate(over="ignore", invalid="ignore"):
        lo, hi = f(x.lo), f(x.hi)
    if name in ("relu", "identity", "leaky_relu"):
        # exact in float32 but for leaky's product, one rounding: relative 2^-24
        return Box(lo, hi) if name != "leaky_relu" else _widen(Box(lo, hi), (np.abs(lo) + np.abs(hi)) * EPS32)
    # Runtimes approximate transcendental functions (onnxruntime's MLAS clamps sigmoid's input to
    # [-18, 18] and tanh's to [-9, 9] before a rational approximation): a relative margin plus an
    # absolute one of 2^-20 covers both.
    ulp = 8 * EPS32 * (np.abs(lo) + np.abs(hi)) + ABS_ACT
    return Box(lo - ulp, hi + ulp)


def _monotone(op: Op, name: str) -> Callable[[np.ndarray], np.ndarray]:
    if name == "relu":
        return lambda v: np.maximum(v, 0.0)
    if name == "leaky_relu":
        a = float(op.attrs.get("alpha", 0.01))
        if a < 0:
            raise _Unknown
        return lambda v: np.where(v >= 0, v, a * v)
    if name == "tanh":
        return np.tanh
    if name == "sigmoid":
        return lambda v: 1.0 / (1.0 + np.exp(-v))
    if name == "elu":  # scale * (v if v > 0 else alpha * (exp(input_scale * v) - 1))
        a = float(op.attrs.get("alpha", 1.0))
        sc, isc = float(op.attrs.get("scale", 1.0)), float(op.attrs.get("input_scale", 1.0))
        if a < 0 or sc < 0 or isc < 0:
            raise _Unknown
        return lambda v: sc * np.where(v > 0, v, a * np.expm1(isc * np.minimum(v, 0.0)))
    if name == "softplus":  # log(1 + exp(beta * v)) / beta
        beta = float(op.attrs.get("beta", 1.0))
        if beta <= 0:
            raise _Unknown
        return lambda v: np.logaddexp(0.0, beta * v) / beta
    if name == "hardsigmoid":
        a, b = float(op.attrs.get("alpha", 0.2)), float(op.attrs.get("beta", 0.5))
        if a < 0:
            raise _Unknown
        return lambda v: np.clip(a * v + b, 0.0, 1.0)
    return lambda v: v


def _split_inf(x: Box) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Finite parts of lo/hi (infinities as 0) and the masks of -inf lows and +inf highs."""
    neg = np.isneginf(x.lo)
    pos = np.isposinf(x.hi)
    lo = np.where(np.isfinite(x.lo), x.lo, 0.0)
    hi = np.where(np.isfinite(x.hi), x.hi, 0.0)
    return lo, hi, neg.astype(np.float64), pos.astype(np.float64)


def _bounds(
    apply: Callable[[np.ndarray, np.ndarray], np.ndarray],
    x: Box,
    w: np.ndarray,
    bias: np.ndarray | None,
    fan: int,
) -> Box:
    """Sound bounds of ``apply(x, w) + bias`` for a linear map ``apply`` in x and in w."""
    wp, wn = np.maximum(w, 0.0), np.minimum(w, 0.0)
    lo, hi, neg, pos = _split_inf(x)
    y_hi = apply(hi, wp) + apply(lo, wn)
    y_lo = apply(lo, wp) + apply(hi, wn)
    up_inf = apply(pos, (wp > 0).astype(np.float64)) + apply(neg, (wn < 0).astype(np.float64)) > 0
    dn_inf = apply(neg, (wp > 0).astype(np.float64)) + apply(pos, (wn < 0).astype(np.float64)) > 0
    mag = apply(np.maximum(np.abs(lo), np.abs(hi)), np.abs(w))
    if bias is not None:
        y_hi = y_hi + bias
        y_lo = y_lo + bias
        mag = mag + np.abs(bias)
    err = mag * (fan + 2) * EPS32 + (fan + 2) * TINY
    return Box(np.where(dn_inf, -np.inf, y_lo - err), np.where(up_inf, np.inf, y_hi + err))


def _linear(op: Op, x: Box) -> Box:
    w = op.params["weight"].value.astype(np.float64)
    # alpha joins the weights before their signs are split: a negative alpha swaps the bounds
    wt = (w.T if op.attrs.get("layout") == "oi" else w) * float(op.attrs.get("alpha", 1.0))  # [I, O]
    beta = float(op.attrs.get("beta", 1.0))
    b = op.params.get("bias")
    bias = None if b is None else (beta * b.value.astype(np.float64)).reshape(-1)
    if bias is not None and bias.size == 1:
        bias = np.full(wt.shape[1], bias.item())
    return _bounds(lambda v, m: v @ m, x, wt, bias, wt.shape[0])


def _conv(op: Op, x: Box) -> Box:
    w = op.params["weight"].value.astype(np.float64)
    b = op.params.get("bias")
    nd = w.ndim - 2
    if nd not in (1, 2) or x.lo.shape[0] != 1:
        raise _Unknown
    strides = list(op.attrs.get("strides") or [1] * nd)
    dil = list(op.attrs.get("dilations") or [1] * nd)
    pads = list(op.attrs.get("pads") or [0] * (2 * nd))
    groups = int(op.attrs.get("groups", 1))
    if nd == 1:  # treat as 2-D with a height of 1
        w = w[:, :, None, :]
        strides, dil, pads = [1, *strides], [1, *dil], [0, pads[0], 0, pads[1]]
        x = Box(x.lo[:, :, None, :], x.hi[:, :, None, :])

    def apply(v: np.ndarray, m: np.ndarray) -> np.ndarray:
        return _conv2d(v[0], m, strides, pads, dil, groups)[None]

    bias = None if b is None else b.value.astype(np.float64).reshape(1, -1, 1, 1)
    out = _bounds(apply, x, w, bias, int(math.prod(w.shape[1:])))
    if nd == 1:
        out = Box(out.lo[:, :, 0, :], out.hi[:, :, 0, :])
    return out


def _patches(
    x: np.ndarray, k: tuple[int, int], strides: list[int], pads: list[int], dil: list[int], fill: float
) -> np.ndarray:
    """[C, kh, kw, Ho, Wo] windows of ``x`` [C, H, W] padded with ``fill``."""
    top, left, bottom, right = pads[0], pads[1], pads[2], pads[3]
    xp = np.pad(x, ((0, 0), (top, bottom), (left, right)), constant_values=fill)
    kh, kw = k
    ho = (xp.shape[1] - dil[0] * (kh - 1) - 1) // strides[0] + 1
    wo = (xp.shape[2] - dil[1] * (kw - 1) - 1) // strides[1] + 1
    out = np.empty((x.shape[0], kh, kw, ho, wo), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            r0, c0 = i * dil[0], j * dil[1]
            out[:, i, j] = xp[
                :,
                r0 : r0 + strides[0] * (ho - 1) + 1 : strides[0],
                c0 : c0 + strides[1] * (wo - 1) + 1 : strides[1],
            ]
    return out


def _conv2d(
    x: np.ndarray, w: np.ndarray, strides: list[int], pads: list[int], dil: list[int], groups: int
) -> np.ndarray:
    cols = _patches(x, (w.shape[2], w.shape[3]), strides, pads, dil, 0.0)
    cg, og = w.shape[1], w.shape[0] // groups
    wg = w.reshape(groups, og, *w.shape[1:])
    cols_g = cols.reshape(groups, cg, *cols.shape[1:])
    out = np.einsum("gocij,gcijhw->gohw", wg, cols_g, optimize=True)
    return out.reshape(w.shape[0], *out.shape[2:])


def _pool(v: np.ndarray, op: Op, how: str) -> np.ndarray:
    k = list(op.attrs.get("kernel", []))
    nd = len(k)
    if nd not in (1, 2) or v.shape[0] != 1:
        raise _Unknown
    strides = list(op.attrs.get("strides") or k)
    dil = list(op.attrs.get("dilations") or [1] * nd)
    pads = list(op.attrs.get("pads") or [0] * (2 * nd))
    if op.attrs.get("ceil_mode"):
        raise _Unknown
    x = v[0]
    if nd == 1:
        k, strides, dil, pads = [1, *k], [1, *strides], [1, *dil], [0, pads[0], 0, pads[1]]
        x = x[:, None, :]
    if how == "max":
        fill = -np.inf
        out = _patches(x, (k[0], k[1]), strides, pads, dil, fill).max(axis=(1, 2))
    else:
        s = _patches(np.where(np.isfinite(x), x, 0.0), (k[0], k[1]), strides, pads, dil, 0.0).sum(axis=(1, 2))
        infs = _patches(np.where(np.isfinite(x), 0.0, x), (k[0], k[1]), strides, pads, dil, 0.0)
        with np.errstate(invalid="ignore"):
            s = s + infs.sum(axis=(1, 2))
        if op.attrs.get("count_include_pad") or not any(pads):
            cnt = float(k[0] * k[1])
            out = s / cnt
        else:
            ones = _patches(np.ones_like(x[:1]), (k[0], k[1]), strides, pads, dil, 0.0).sum(axis=(1, 2))
            out = s / ones
    if nd == 1:
        out = out[:, 0, :]
    return out[None]


def unit_upper(box: Box, unit_axis: int) -> np.ndarray:
    """Per unit, the largest upper bound over every other axis."""
    axes = tuple(i for i in range(box.hi.ndim) if i != unit_axis)
    return box.hi.max(axis=axes) if axes else box.hi


def unit_lower(box: Box, unit_axis: int) -> np.ndarray:
    axes = tuple(i for i in range(box.lo.ndim) if i != unit_axis)
    return box.lo.min(axis=axes) if axes else box.lo
