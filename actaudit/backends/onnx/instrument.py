"""Append per-unit reductions after each site's pre-activation; expose only those small vectors.

Each site's pre-activation ``x`` is viewed (a free ``Reshape``) as ``[A, C, B]`` with
the unit axis in the middle, so every reduction runs over the fixed axes ``(0, 2)``
whatever the tensor's rank and whether or not its dimensions are known before run
time. The view's shape comes from ``Shape(x)`` inside the graph.

Two variants of the statistics:

* *fast* (every batch): min, max, sum and sum of squares of ``x`` and of ``max(x, 0)``
  (the negative part is their difference, taken on the host), and counts of
  ``x > low`` / ``x < high`` summed as float32 (exact below 2**24 per unit and call;
  the backend takes the careful variant above that). Only kernels that onnxruntime runs
  at memory speed: squares as ``Mul`` + ``ReduceSum`` (``ReduceSumSquare`` is 3-20×
  slower), counts as ``Cast`` to bool and back of ``max(x, 0)`` (low = 0) or of a
  ``HardSigmoid`` that keeps the sign of ``x - thr`` (``Greater``/``Less`` are 5-10×
  slower), and a unit axis that is the last one reduced through a ``[N, R, C]`` view
  (middle axis first). A ReLU's own output is ``max(x, 0)`` and is reused instead of recomputed, except
  for 4-d ``[N, C, H, W]`` sites where onnxruntime's blocked Conv layout would cost a
  second reorder to read it.
* *post* (ReLU sites, on request, :func:`post_eligible`): the fast variant's exact subset read from
  the ReLU's output alone (``POST_STATS``), so onnxruntime keeps the producer's fused activation and
  blocked layout; the minimum and the negative moments are left unmeasured (NaN on the host).
* *careful*: NaN/Inf masked out and counted, the negative part summed directly, counts
  in int32. The backend reruns a batch with it only when the fast sums come back
  non-finite (or a count could be inexact), so clean data pays nothing for it.

Statistics from ``If`` branches leave through extra ``If`` outputs (the branch that
did not run yields empty tensors). In ``Loop`` bodies they are folded into extra
loop-carried accumulators (sums and counts in float64/int64, min, max, the last shape
and axis, and the number of elements seen), so memory does not grow with the trip
count; scan outputs, one row per iteration, peaked at 786 MB for 10⁵ iterations of
an 8-unit ReLU.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import proto as onnx
from .graph import Scope, opset_version
from .proto import TensorProto
from .sites import OnnxSite

_AXES_AS_INPUT = {"ReduceSum": 13, "ReduceMin": 18, "ReduceMax": 18, "ReduceSumSquare": 18, "ReduceProd": 18}
_COMPUTE: dict[int, int] = {TensorProto.DOUBLE: TensorProto.DOUBLE}


@dataclass
class AxisRule:
    """How a site's unit axis is chosen in the graph: a fixed index, last, or by rank at run time."""

    fixed: int | None = None  # an index (negative counts from the end)
    last: bool = False
    # The run-time rule for an undetermined axis (actaudit.unitaxis.guessed_axis): rank <= 1 → the
    # whole tensor is one unit (axis = rank, past the last), 2-3 → last, 4+ → 1.
    by_rank: bool = False
    whole: bool = False  # the whole tensor is one unit at any rank (axis = rank, past the last)
    source: str = "guessed"  # actaudit.unitaxis source, for the report


@dataclass
class ReductionPlan:
    """What the instrumented graph reduces for one site: its unit axis and stuck thresholds."""

    site: OnnxSite
    axis: AxisRule
    low: float  # -inf when there is no low threshold
    high: float  # +inf when there is no high threshold
    # Statistics from the ReLU's output only (:func:`post_eligible`): the pre-activation is not read,
    # so onnxruntime keeps its fused Conv/Gemm+ReLU kernels; min and the negative moments are unknown.
    post: bool = False


# What a post-activation site measures: the statistics exact from max(x, 0) alone.
POST_STATS = ("max", "pos_sum", "pos_sq", "above_low")


def post_eligible(site: OnnxSite, low: float, high: float) -> bool:
    """A plain ReLU in float32 whose own output is in the graph: fires (x > 0 ⇔ relu(x) > 0) and the
    positive moments come exactly from that output."""
    return (
        site.act.kind == "relu"
        and site.relu_out is not None
        and low == 0.0
        and math.isinf(high)
        and site.elem_type == TensorProto.FLOAT
    )


@dataclass
class SiteOutputs:
    """Top-level output names of one site's vectors, and how many Loop levels stack them."""

    names: dict[str, str] = field(default_factory=dict)
    stacked: int = 0


class _Emitter:
    """Appends nodes to one graph, with fresh names and cached constants."""

    def __init__(self, graph: onnx.GraphProto, opset: int, fresh: _Names) -> None:
        self.graph = graph
        self.opset = opset
        self.fresh = fresh
        self._consts: dict[tuple[bytes, int, tuple[int, ...]], str] = {}

    def node(self, op: str, inputs: list[str], **attrs: Any) -> str:
        out = self.fresh()
        self.graph.node.append(onnx.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def const(self, value: np.ndarray) -> str:
        key = (value.tobytes(), int(value.dtype.num), tuple(value.shape))
        if key not in self._consts:
            out = self.fresh()
            tensor = onnx.from_array(value, out)
            self.graph.node.append(onnx.make_node("Constant", [], [out], name=out, value=tensor))
            self._consts[key] = out
        return self._consts[key]

    def ints(self, *v: int) -> str:
        return self.const(np.array(v, dtype=np.int64))

    def reduce(self, op: str, x: str, axes: tuple[int, ...] = (0, 2), keepdims: int = 0) -> str:
        if self.opset >= _AXES_AS_INPUT[op]:
            return self.node(op, [x, self.ints(*axes)], keepdims=keepdims)
        return self.node(op, [x], axes=list(axes), keepdims=keepdims)

    def per_unit(self, op: str, x: str, stages: tuple[int, ...] = (2, 0)) -> str:
        """Reduce a view to ``[C]`` one axis at a time, in ``stages`` order (the last is axis 0).

        ``[A, C, B]`` goes (2, 0): the contiguous axis first, which onnxruntime reduces several
        times faster than axes (0, 2) at once (ReduceSumSquare 1.1 ms vs 9 ms on 32×32×3136
        floats). ``[N, R, C]`` (unit axis last) goes (1, 0): a middle axis with C contiguous
        is 2-4× faster than axis 0 of ``[N*R, C]`` for ReduceMax/ReduceMin. ``[A, C]`` goes (0,).
        """
        for i, axis in enumerate(stages):
            x = self.reduce(op if i == 0 or op != "ReduceSumSquare" else "ReduceSum", x, axes=(axis,))
        return x

    def count(self, mask: str, dtype: int = TensorProto.FLOAT, stages: tuple[int, ...] = (2, 0)) -> str:
        return self.per_unit("ReduceSum", self.node("Cast", [mask], to=dtype), stages)


class _Names:
    """Fresh tensor names that collide with nothing in the model."""

    def __init__(self, model: onnx.ModelProto) -> None:
        taken = _all_names(model.graph)
        prefix = "actaudit"
        while any(n.startswith(prefix) for n in taken):
            prefix = "_" + prefix
        self.prefix = prefix
        self.n = 0

    def __call__(self) -> str:
        self.n += 1
        return f"{self.prefix}_{self.n}"


def _all_names(graph: onnx.GraphProto) -> set[str]:
    names = {v.name for v in [*graph.input, *graph.output, *graph.initializer]}
    for node in graph.node:
        names.update(node.output)
        names.add(node.name)
        for a in node.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                names |= _all_names(a.g)
            for g in a.graphs:
                names |= _all_names(g)
    return names


@dataclass
class _Out:
    name: str
    elem: int
    rank: int
    key: tuple[int, str]  # (site index, stat)


def instrument(
    model: onnx.ModelProto,
    plans: list[ReductionPlan],
    careful: bool,
    *,
    skip: frozenset[int] = frozenset(),
    fresh: _Names | None = None,
) -> dict[int, SiteOutputs]:
    """Add reductions for ``plans`` to ``model`` in place; returns output names per plan index.

    ``model`` must be the copy the plans' sites were found in; plans whose index is in
    ``skip`` are measured elsewhere (:mod:`.pack`), with names from the same ``fresh``.
    """
    opset = opset_version(model)
    fresh = fresh or _Names(model)
    emitters: dict[int, _Emitter] = {}
    pending: dict[int, tuple[Scope, list[_Out]]] = {}
    for idx, plan in enumerate(plans):
        if idx in skip:
            continue
        scope = plan.site.scope
        em = emitters.get(id(scope.graph))
        if em is None:
            em = emitters[id(scope.graph)] = _Emitter(scope.graph, opset, fresh)
        emitted = _emit_site(em, plan, careful)
        bucket = pending.setdefault(id(scope), (scope, []))[1]
        bucket.extend(_Out(name, elem, 1, (idx, stat)) for stat, (name, elem) in emitted.items())
    result: dict[int, SiteOutputs] = defaultdict(SiteOutputs)
    # Bring outputs up one scope level at a time, deepest first.
    while pending:
        depth = max(_depth(s) for s, _ in pending.values())
        for key in [k for k, (s, _) in pending.items() if _depth(s) == depth]:
            scope, outs = pending.pop(key)
            if scope.owner is None:
                for o in outs:
                    scope.graph.output.append(onnx.make_tensor_value_info(o.name, o.elem, [None] * o.rank))
                    result[o.key[0]].names[o.key[1]] = o.name
                    result[o.key[0]].stacked = o.rank - 1
                continue
            lifted = _lift(scope, outs, fresh)
            assert scope.parent is not None
            pending.setdefault(id(scope.parent), (scope.parent, []))[1].extend(lifted)
    return dict(result)


_FLOATS = (TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16)


def _accumulate(scope: Scope, outs: list[_Out], fresh: _Names) -> list[_Out]:
    """Fold a Loop body's per-iteration statistics into new loop-carried values.

    Loop inputs are ``[M, cond, v...]``, body inputs ``[iter, cond, v...]``, body outputs
    ``[cond, v..., scans...]`` and Loop outputs ``[v_final..., scans...]``: a new carried
    value goes after the existing ones everywhere. Initial values are scalars (0, ±inf)
    or empty tensors that broadcast or get overwritten on the first iteration; a Loop
    that runs no iteration leaves an empty shape, which the backend reads as "not run".
    """
    owner, body = scope.owner, scope.graph
    assert owner is not None and scope.parent is not None
    parent = scope.parent.graph
    outs = list(outs)
    for o in list(outs):
        if o.key[1] == "shape" and not any(q.key == (o.key[0], "elements") for q in outs):
            elements = fresh()
            body.node.append(onnx.make_node("ReduceProd", [o.name], [elements], name=elements, keepdims=1))
            outs.append(_Out(elements, TensorProto.INT64, 1, (o.key[0], "elements")))
    lifted = []
    for o in outs:
        stat = o.key[1]
        carried = len(owner.input) - 2
        acc_in, acc_out, init, final = fresh(), fresh(), fresh(), fresh()
        if stat in ("shape", "axis"):  # the last iteration's
            elem = o.elem
            body.node.append(onnx.make_node("Identity", [o.name], [acc_out], name=acc_out))
            init_tensor = onnx.make_tensor(init, elem, [0] * o.rank, [])
        elif stat in ("min", "max"):
            elem = o.elem
            body.node.append(onnx.make_node(stat.capitalize(), [acc_in, o.name], [acc_out], name=acc_out))
            bound = np.array(np.inf if stat == "min" else -np.inf, dtype=onnx.tensor_dtype_to_np_dtype(elem))
            init_tensor = onnx.from_array(bound, init)
        else:  # sums and counts, exact in float64 / int64 over any number of iterations
            elem = TensorProto.DOUBLE if o.elem in _FLOATS else TensorProto.INT64
            cast = fresh()
            body.node.append(onnx.make_node("Cast", [o.name], [cast], name=cast, to=elem))
            body.node.append(onnx.make_node("Add", [acc_in, cast], [acc_out], name=acc_out))
            zero = np.zeros((), dtype=np.float64 if elem == TensorProto.DOUBLE else np.int64)
            init_tensor = onnx.from_array(zero, init)
        parent.initializer.append(init_tensor)
        body.input.append(onnx.make_tensor_value_info(acc_in, elem, None))
        outputs = list(body.output)
        del body.output[:]
        body.output.extend(
            [
                *outputs[: 1 + carried],
                onnx.make_tensor_value_info(acc_out, elem, None),
                *outputs[1 + carried :],
            ]
        )
        owner.input.append(init)
        owner.output.insert(carried, final)
        lifted.append(_Out(final, elem, o.rank, o.key))
    return lifted


def _depth(scope: Scope) -> int:
    d = 0
    s = scope.parent
    while s is not None:
        d += 1
        s = s.parent
    return d


def _lift(scope: Scope, outs: list[_Out], fresh: _Names) -> list[_Out]:
    """Expose a subgraph's outputs as new outputs of its owner (If or Loop) node."""
    owner = scope.owner
    assert owner is not None
    if owner.op_type == "Loop":
        return _accumulate(scope, outs, fresh)
    stack = 0
    for o in outs:
        scope.graph.output.append(onnx.make_tensor_value_info(o.name, o.elem, [None] * o.rank))
    if owner.op_type == "If":
        for a in owner.attribute:
            if a.type == onnx.AttributeProto.GRAPH and a.g is not scope.graph:
                for o in outs:
                    empty = fresh()
                    value = onnx.make_tensor(empty, o.elem, [0] * o.rank, [])
                    a.g.node.append(onnx.make_node("Constant", [], [empty], name=empty, value=value))
                    a.g.output.append(onnx.make_tensor_value_info(empty, o.elem, [None] * o.rank))
    lifted = []
    for o in outs:
        name = fresh()
        owner.output.append(name)
        lifted.append(_Out(name, o.elem, o.rank + stack, o.key))
    return lifted


def _view_target(
    em: _Emitter, plan: ReductionPlan, shape_out: str, view: tuple[int, int] | None
) -> tuple[str, str, tuple[int, ...]]:
    """(unit axis as a tensor, the ``[A, C, B]``-like view's target shape, reduction stages)."""
    shape = shape_out
    if view is not None:
        # Rank known before run time: the unit axis is a constant, and the view's sizes are
        # read from Shape(x) (not from static shape inference, which may be stale).
        k_value, rank_value = view
        k = em.node("Identity", [em.ints(k_value)])  # its own name: it is also an output
        c = em.node("Slice", [shape, k, em.ints(k_value + 1)])
        if k_value == rank_value - 1 and rank_value >= 3:  # unit axis last: view [N, R, C]
            n = em.node("Slice", [shape, em.ints(0), em.ints(1)])
            target = em.node("Concat", [n, em.ints(-1), c], axis=0)
            stages: tuple[int, ...] = (1, 0)
        elif k_value == rank_value - 1:  # rank 2 (or 1): view [A, C]
            target = em.node("Concat", [em.ints(-1), c], axis=0)
            stages = (0,)
        else:
            after = em.node("Slice", [shape, em.ints(k_value + 1), em.ints(rank_value)])
            b = em.reduce("ReduceProd", after, axes=(0,), keepdims=1)
            target = em.node("Concat", [em.ints(-1), c, b], axis=0)
            stages = (2, 0)
    else:
        # Rank known only at run time (or <= 1): index a shape padded with a trailing 1, so that
        # axis = rank (the whole tensor as one unit) and rank 0 reduce like any other.
        rank = em.node("Shape", [shape])
        k = _axis(em, plan.axis, rank)
        shape = em.node("Concat", [shape, em.ints(1)], axis=0)
        before = em.node("Slice", [shape, em.ints(0), k])
        a = em.reduce("ReduceProd", em.node("Concat", [em.ints(1), before], axis=0), axes=(0,), keepdims=1)
        k1 = em.node("Add", [k, em.ints(1)])
        c = em.node("Slice", [shape, k, k1])
        target = em.node("Concat", [a, c, em.ints(-1)], axis=0)
        stages = (2, 0)
    return k, target, stages


def _emit_site(em: _Emitter, plan: ReductionPlan, careful: bool) -> dict[str, tuple[str, int]]:
    site = plan.site
    x = site.x
    elem = site.elem_type
    compute = _COMPUTE.get(int(elem), int(TensorProto.FLOAT))
    np_compute = np.float64 if compute == TensorProto.DOUBLE else np.float32
    if plan.post and not careful:
        return _emit_post(em, plan)
    shape_out = em.node("Shape", [x])
    view = _static_axis(site, plan.axis)
    k, target, stages = _view_target(em, plan, shape_out, view)
    xs = em.node("Reshape", [x, target])
    if elem != compute:
        xs = em.node("Cast", [xs], to=compute)

    def per_unit(op: str, t: str) -> str:
        return em.per_unit(op, t, stages)

    zero = em.const(np.zeros((), np_compute))
    out: dict[str, tuple[str, int]] = {
        "shape": (shape_out, TensorProto.INT64),
        "axis": (k, TensorProto.INT64),
    }
    if careful:
        bad = em.node("Or", [em.node("IsNaN", [xs]), em.node("IsInf", [xs])])
        fin = em.node("Not", [bad])
        out["nonfinite"] = (em.count(bad, TensorProto.INT32, stages), TensorProto.INT32)
        xz = em.node("Where", [fin, xs, zero])
        inf = em.const(np.array(np.inf, np_compute))
        ninf = em.const(np.array(-np.inf, np_compute))
        out["min"] = (per_unit("ReduceMin", em.node("Where", [fin, xs, inf])), compute)
        out["max"] = (per_unit("ReduceMax", em.node("Where", [fin, xs, ninf])), compute)
        neg = em.node("Min", [xz, zero])
        pos = em.node("Max", [xz, zero])
        out["neg_sum"] = (per_unit("ReduceSum", neg), compute)
        out["neg_sq"] = (per_unit("ReduceSumSquare", neg), compute)
        if math.isfinite(plan.low):
            le = em.node("Not", [em.node("Greater", [xs, em.const(np.array(plan.low, np_compute))])])
            out["low"] = (em.count(em.node("And", [le, fin]), TensorProto.INT32, stages), TensorProto.INT32)
        if math.isfinite(plan.high):
            ge = em.node("Not", [em.node("Less", [xs, em.const(np.array(plan.high, np_compute))])])
            out["high"] = (em.count(em.node("And", [ge, fin]), TensorProto.INT32, stages), TensorProto.INT32)
        out["pos_sum"] = (per_unit("ReduceSum", pos), compute)
        out["pos_sq"] = (per_unit("ReduceSumSquare", pos), compute)
        return out
    # Fast variant: only kernels that run at memory speed in onnxruntime (ReduceSumSquare,
    # Greater/Less and Sign are several times slower than Mul, HardSigmoid and ReduceSum).
    # The negative part is (all) - (positive part), taken on the host.
    out["min"] = (per_unit("ReduceMin", xs), compute)
    out["max"] = (per_unit("ReduceMax", xs), compute)
    out["sum"] = (per_unit("ReduceSum", xs), compute)
    out["sq"] = (per_unit("ReduceSum", em.node("Mul", [xs, xs])), compute)
    # A ReLU's own output is max(x, 0), but onnxruntime keeps a Conv's output blocked
    # (NCHWc) on CPU: reading it would cost a second reorder, dearer than a Relu here.
    conv_like = view is not None and view == (1, 4)
    if site.relu_out and elem == compute and not conv_like:
        pos = em.node("Reshape", [site.relu_out, target])
    else:
        pos = em.node("Relu", [xs])
    out["pos_sum"] = (per_unit("ReduceSum", pos), compute)
    out["pos_sq"] = (per_unit("ReduceSum", em.node("Mul", [pos, pos])), compute)
    if math.isfinite(plan.low):
        # max(x, 0) != 0 is x > 0: a ReLU-like site counts on its positive part directly.
        ind = _nonzero(em, pos, compute) if plan.low == 0.0 else _indicator(em, xs, plan.low, 1.0, compute)
        out["above_low"] = (per_unit("ReduceSum", ind), compute)
    if math.isfinite(plan.high):
        out["below_high"] = (per_unit("ReduceSum", _indicator(em, xs, plan.high, -1.0, compute)), compute)
    return out


def _emit_post(em: _Emitter, plan: ReductionPlan) -> dict[str, tuple[str, int]]:
    """A ReLU site's statistics from its output ``y = max(x, 0)`` alone (``POST_STATS``).

    Nothing reads ``x``, not even its shape (``Shape(y)`` is the same), so the producer keeps its
    fused activation and onnxruntime its blocked layout. ``y > 0`` exactly where ``x > 0``;
    ``Σy``, ``Σy²`` are the positive moments; ``max(y)`` is ``max(x)`` where that is positive.
    """
    y = plan.site.relu_out
    assert y is not None
    shape_out = em.node("Shape", [y])
    k, target, stages = _view_target(em, plan, shape_out, _static_axis(plan.site, plan.axis))
    pos = em.node("Reshape", [y, target])
    f = int(TensorProto.FLOAT)
    return {
        "shape": (shape_out, TensorProto.INT64),
        "axis": (k, TensorProto.INT64),
        "max": (em.per_unit("ReduceMax", pos, stages), f),
        "pos_sum": (em.per_unit("ReduceSum", pos, stages), f),
        "pos_sq": (em.per_unit("ReduceSum", em.node("Mul", [pos, pos]), stages), f),
        "above_low": (em.per_unit("ReduceSum", _nonzero(em, pos, f), stages), f),
    }


def _nonzero(em: _Emitter, t: str, compute: int) -> str:
    """1.0 where ``t`` is not zero (NaN counts as not zero), else 0.0: two Casts through bool."""
    return em.node("Cast", [em.node("Cast", [t], to=TensorProto.BOOL)], to=compute)


def _indicator(em: _Emitter, xs: str, thr: float, sign: float, compute: int) -> str:
    """1.0 where ``sign * (x - thr) > 0``, else 0.0 (for finite ``x``), as a float tensor.

    ``HardSigmoid(x, sign, -sign * thr)`` is ``clip(sign * (x - thr), 0, 1)``; IEEE subtraction
    (with gradual underflow) keeps the sign of ``x - thr`` and is zero only when they are
    equal, so a Cast to bool and back gives the indicator exactly. Three passes at memory
    speed, where Greater (or Less) + Cast cost several times more in onnxruntime.
    Other types (double) compare and cast.
    """
    if compute != TensorProto.FLOAT:
        op = "Greater" if sign > 0 else "Less"
        return em.node("Cast", [em.node(op, [xs, em.const(np.array(thr, np.float64))])], to=compute)
    t = float(np.float32(thr))
    h = em.node("HardSigmoid", [xs], alpha=sign, beta=-sign * t)
    return _nonzero(em, h, compute)


def _static_axis(site: OnnxSite, rule: AxisRule) -> tuple[int, int] | None:
    """(unit axis, rank) when static shape inference knows the rank, else ``None``."""
    rank = site.rank
    if rank is None or rank <= 1 or rule.whole:
        return None  # the run-time path, which also takes rank 0, a [batch] tensor and one whole unit
    if rule.last:
        k = rank - 1
    elif rule.by_rank:
        k = rank - 1 if rank < 4 else 1
    else:
        assert rule.fixed is not None
        k = rule.fixed + rank if rule.fixed < 0 else rule.fixed
        if not 0 <= k < rank:
            return None
    return k, rank


def _axis(em: _Emitter, rule: AxisRule, rank: str) -> str:
    """The unit axis as a 1-element int64 tensor, always within [0, rank)."""
    last = em.node("Sub", [rank, em.ints(1)])
    last = em.node("Where", [em.node("Less", [rank, em.ints(1)]), em.ints(0), last])  # rank 0
    if rule.last:
        return last
    if rule.whole:
        return rank
    if rule.by_rank:
        by_rank = em.node("Where", [em.node("Less", [rank, em.ints(4)]), last, em.ints(1)])
        return em.node("Where", [em.node("Less", [rank, em.ints(2)]), rank, by_rank])
    assert rule.fixed is not None
    k = em.ints(rule.fixed)
    if rule.fixed < 0:
        k = em.node("Add", [rank, k])
        return em.node("Where", [em.node("Less", [k, em.ints(0)]), em.ints(0), k])
    # Kept in range so that a wrong --unit-axis is reported by the backend, not by a failed Reshape.
    return em.node("Where", [em.node("Less", [k, rank]), k, last])
