"""Which units of which sites can leave the graph exactly, and the weight edits that remove them.

A candidate unit outputs one constant ``c`` on every input it will see (``c = 0`` for a
dead ReLU unit, the cap for a ReLU6 stuck at 6). It can go when:

* its pre-activation comes from a Conv / Gemm / MatMul output channel through nothing but
  per-channel ops (BatchNorm, bias, scale) that nobody else reads — that channel is cut
  from the producer and from those per-channel constants;
* every reader of the activation, followed through identities, pooling, global averages,
  Flatten and Concat along the unit axis, ends in a Conv / Gemm / MatMul(+Add) that
  takes the unit as input channels or features — ``c`` times their weights joins that
  op's bias (exact for ``c = 0``; for ``c != 0`` only when no zero padding sees the
  constant) and the input channels are cut.

Anything else (a residual Add whose other operand is live, a model output, an op that
mixes units) keeps the unit, with the reason. Weights are edited as numpy arrays under
the backend's keys; the backend writes them back (:class:`Edits`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .graph import Graph, Op, Param, unit_count


@dataclass
class Candidate:
    """A site's units that output a constant on the data: ``constants[u] = c``."""

    site: str
    x: str  # pre-activation value
    y: str  # activation output value
    units: int
    unit_axis: int
    rank: int
    constants: dict[int, float]
    approximate: set[int] = field(default_factory=set)  # nearly constant: the fold moves outputs


@dataclass
class SiteCut:
    """What prune does at one audit site: the units it removes, folds and keeps (with why)."""

    site: str
    units: int
    removed: list[int] = field(default_factory=list)  # constant 0: cut, nothing to fold
    folded: list[int] = field(default_factory=list)  # constant != 0: folded into biases, then cut
    kept: dict[int, str] = field(default_factory=dict)  # unit -> why it stays
    producer: str | None = None
    consumers: list[str] = field(default_factory=list)
    approximate: list[int] = field(default_factory=list)


@dataclass
class Edits:
    """Cuts and bias changes by parameter key; ``new_bias`` for ops that had none."""

    delete: dict[str, dict[int, set[int]]] = field(default_factory=dict)
    bias_delta: dict[str, np.ndarray] = field(default_factory=dict)  # key -> per-output delta [O]
    new_bias: dict[str, np.ndarray] = field(default_factory=dict)  # op name -> bias [O]
    params: dict[str, Param] = field(default_factory=dict)

    def cut(self, p: Param, axis: int, idx: list[int]) -> None:
        self.params[p.key] = p
        self.delete.setdefault(p.key, {}).setdefault(axis, set()).update(int(i) for i in idx)

    def add_bias(self, op: Op, delta: np.ndarray) -> None:
        b = op.params.get("bias")
        if b is None:
            cur = self.new_bias.get(op.name)
            self.new_bias[op.name] = delta if cur is None else cur + delta
            return
        self.params[b.key] = b
        cur = self.bias_delta.get(b.key)
        self.bias_delta[b.key] = delta if cur is None else cur + delta

    def apply(self, key: str) -> np.ndarray:
        """The edited value of parameter ``key``."""
        p = self.params[key]
        a = p.value
        if key in self.bias_delta:
            d = self.bias_delta[key]
            flat = np.broadcast_to(a.reshape(-1), d.shape) if a.size == 1 else a.reshape(-1)
            new = (flat.astype(np.float64) + d).astype(a.dtype)
            a = new.reshape(a.shape) if a.size == d.size else new
        for axis, idx in sorted(self.delete.get(key, {}).items()):
            ax = axis if a.ndim > axis else a.ndim - 1
            a = np.delete(a, sorted(idx), axis=ax)  # a new array: p.value is never written
        return a if a is not p.value else np.array(a, copy=True)

    def new_bias_value(self, op_name: str, dtype: type = np.float32) -> np.ndarray:
        return self.new_bias[op_name].astype(dtype)

    def keys(self) -> list[str]:
        return sorted(set(self.delete) | set(self.bias_delta))


class Keep(Exception):
    """A site's units stay; the message says why."""


@dataclass
class _Leaf:
    op: Op
    index: Callable[[int], list[int]]  # unit -> input indices of the consumer
    padded: str | None  # why a non-zero constant cannot be folded exactly, if so


def plan(graph: Graph, candidates: list[Candidate]) -> tuple[list[SiteCut], Edits]:
    edits = Edits()
    plans = []
    for c in candidates:
        sp = SiteCut(c.site, c.units)
        plans.append(sp)
        if not c.constants:
            continue
        try:
            producer, chain = _producer(graph, c)
            leaves = _forward(graph, c.y, c.unit_axis, c.rank, 0, None, None)
            if not leaves:
                raise Keep("its output is never read")
        except Keep as e:
            sp.kept = {u: str(e) for u in sorted(c.constants)}
            continue
        sp.producer = producer.label
        sp.consumers = sorted({lf.op.label for lf in leaves})
        go: dict[int, float] = {}
        for u, val in sorted(c.constants.items()):
            if val == 0:
                go[u] = 0.0
                continue
            why = next((lf.padded for lf in leaves if lf.padded), None)
            if why is None:
                why = next(
                    (
                        f"the bias of consumer {lf.op.label} is shared with another op"
                        for lf in leaves
                        if "bias" in lf.op.params and lf.op.params["bias"].shared
                    ),
                    None,
                )
            if why is None:
                why = next(
                    (
                        f"consumer {lf.op.label} has no bias to fold the constant {val:g} into"
                        for lf in leaves
                        if "bias" not in lf.op.params and not lf.op.attrs.get("can_add_bias")
                    ),
                    None,
                )
            if why:
                sp.kept[u] = why
            else:
                go[u] = val
        if not go:
            continue
        units = sorted(go)
        _cut_producer(edits, producer, chain, units, c)
        for lf in leaves:
            _fold_and_cut(edits, lf, go)
        sp.removed = [u for u in units if go[u] == 0]
        sp.folded = [u for u in units if go[u] != 0]
        sp.approximate = sorted(u for u in units if u in c.approximate)
    return plans, edits


def _producer(graph: Graph, c: Candidate) -> tuple[Op, list[Op]]:
    v = c.x
    chain: list[Op] = []
    while True:
        readers = graph.readers(v)
        if graph.is_output(v) or len(readers) != 1:
            others = [r.label for r in readers if r is not (chain[-1] if chain else None)]
            what = "a model output" if graph.is_output(v) else ", ".join(others[:3])
            raise Keep(f"the pre-activation {v} is also read by {what}: its producer channel cannot be cut")
        p = graph.producer.get(v)
        if p is None:
            raise Keep("the pre-activation is a model input, not a layer's output")
        if p.kind in ("bn", "scale", "identity"):
            for role, prm in p.params.items():
                dim = c.unit_axis - (c.rank - prm.value.ndim)
                if (
                    p.kind == "scale"
                    and prm.value.size > 1
                    and dim >= 0
                    and prm.value.shape[dim] not in (1, c.units)
                ):
                    raise Keep(f"the {role} constant of {p.label} does not broadcast along the units")
            chain.append(p)
            v = p.inputs[0]
            continue
        if p.kind == "conv":
            if int(p.attrs.get("groups", 1)) != 1:
                raise Keep(
                    f"produced by the grouped convolution {p.label}: cutting a channel breaks its groups"
                )
            if c.unit_axis != 1:
                raise Keep(f"unit axis {c.unit_axis} is not the channel axis of {p.label}")
        elif p.kind == "linear":
            if c.unit_axis != c.rank - 1:
                raise Keep(f"unit axis {c.unit_axis} is not the feature axis of {p.label}")
        else:
            raise Keep(f"produced by {p.label}, not by a Conv, Gemm or MatMul")
        w = p.params.get("weight")
        if w is None:
            raise Keep(f"the weight of {p.label} is computed, not a constant")
        if w.shared:
            raise Keep(f"the weight of {p.label} is shared with another op")
        b = p.params.get("bias")
        if b is not None and (b.shared or b.value.size not in (1, unit_count(p))):
            raise Keep(f"the bias of {p.label} is shared or not one value per output")
        if any(prm.shared for op in chain for prm in op.params.values() if prm.value.size > 1):
            raise Keep("a per-channel constant between the producer and the activation is shared")
        return p, chain


def _forward(
    graph: Graph, v: str, axis: int, rank: int, off: int, flat: int | None, padded: str | None
) -> list[_Leaf]:
    if graph.is_output(v):
        raise Keep(f"{v} is a model output")
    leaves: list[_Leaf] = []
    for r in graph.readers(v):
        k = r.kind
        if k == "identity" and r.inputs[0] == v:
            leaves += _forward(graph, r.outputs[0], axis, rank, off, flat, padded)
        elif k in ("maxpool", "avgpool", "gap") and r.inputs[0] == v and flat is None and axis == 1:
            pad = padded
            if k == "avgpool" and any(r.attrs.get("pads", [])) and r.attrs.get("count_include_pad"):
                pad = pad or f"{r.label} averages zero padding"
            out_rank = rank if k != "gap" or r.attrs.get("keepdims", True) else 2
            leaves += _forward(graph, r.outputs[0], axis, out_rank, off, flat, pad)
        elif k == "reduce" and r.inputs[0] == v and flat is None:
            axes = [int(a) for a in r.attrs.get("axes", ())]
            if axis in axes or not axes:
                raise Keep(f"{r.label} reduces over the units' axis")
            pad = padded
            if r.attrs.get("how") not in ("mean", "max", "min"):
                pad = pad or f"{r.label} sums the constant over {len(axes)} axes"
            keep = bool(r.attrs.get("keepdims", True))
            new_axis = axis if keep else axis - sum(1 for a in axes if a < axis)
            leaves += _forward(
                graph, r.outputs[0], new_axis, rank if keep else rank - len(axes), off, flat, pad
            )
        elif (
            k == "flatten" and r.inputs[0] == v and flat is None and axis == 1 and r.attrs.get("axis", 1) == 1
        ):
            shape = graph.shapes.get(v)
            if shape is None:
                raise Keep(f"the shape before {r.label} is unknown")
            leaves += _forward(graph, r.outputs[0], 1, 2, off, math.prod(shape[2:]), padded)
        elif k == "concat" and flat is None and _norm(r.attrs.get("axis", 1), rank) == axis:
            if r.inputs.count(v) != 1:
                raise Keep(f"{v} enters {r.label} twice")
            before = 0
            for i in r.inputs[: r.inputs.index(v)]:
                s = graph.shapes.get(i)
                if s is None:
                    raise Keep(f"the shapes entering {r.label} are unknown")
                before += s[axis]
            leaves += _forward(graph, r.outputs[0], axis, rank, off + before, flat, padded)
        elif k == "conv" and r.inputs[0] == v:
            if flat is not None or axis != 1:
                raise Keep(f"{r.label} does not take the units as input channels")
            if int(r.attrs.get("groups", 1)) != 1:
                raise Keep(f"consumer {r.label} is a grouped convolution")
            _own_weight(r)
            pad = padded or (
                f"consumer {r.label} zero-pads its input" if any(r.attrs.get("pads", [])) else None
            )
            leaves.append(_Leaf(r, _same(off), pad))
        elif k == "linear" and r.inputs[0] == v:
            if flat is None and axis != rank - 1:
                raise Keep(f"{r.label} does not take the units as input features")
            _own_weight(r)
            if flat is None:
                leaves.append(_Leaf(r, _same(off), padded))
            else:
                leaves.append(_Leaf(r, _span(off, flat), padded))
        elif k == "add":
            raise Keep(f"feeds the residual {r.label}, whose other operand is live")
        elif k == "concat":
            raise Keep(f"feeds {r.label} along another axis than the units'")
        else:
            raise Keep(f"read by {r.label}, which mixes or reshapes units")
    return leaves


def _same(off: int) -> Callable[[int], list[int]]:
    return lambda u: [u + off]


def _span(off: int, size: int) -> Callable[[int], list[int]]:
    """Unit u after a Flatten: ``size`` consecutive features."""
    return lambda u: list(range((u + off) * size, (u + off + 1) * size))


def _own_weight(op: Op) -> None:
    w = op.params.get("weight")
    if w is None:
        raise Keep(f"the weight of consumer {op.label} is computed, not a constant")
    if w.shared:
        raise Keep(f"the weight of consumer {op.label} is shared with another op")


def _norm(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def _cut_producer(edits: Edits, p: Op, chain: list[Op], units: list[int], c: Candidate) -> None:
    w = p.params["weight"]
    if p.kind == "conv":
        edits.cut(w, 0, units)
        o = int(w.value.shape[0])
    else:
        oi = p.attrs.get("layout") == "oi"
        edits.cut(w, 0 if oi else 1, units)
        o = int(w.value.shape[0] if oi else w.value.shape[1])
    b = p.params.get("bias")
    if b is not None and b.value.size == o:
        edits.cut(b, b.value.ndim - 1, units)
    for op in chain:
        for prm in op.params.values():
            if prm.value.size == 1:
                continue
            a = prm.value
            if op.kind == "bn":
                edits.cut(prm, 0, units)
                continue
            dim = c.unit_axis - (c.rank - a.ndim)
            if dim < 0 or a.shape[dim] == 1:
                continue
            edits.cut(prm, dim, units)


def _fold_and_cut(edits: Edits, lf: _Leaf, go: dict[int, float]) -> None:
    op = lf.op
    w = op.params["weight"].value  # float64 only column by column: a large weight is never copied whole
    idx = [i for u in sorted(go) for i in lf.index(u)]
    if op.kind == "conv":
        axis_in = 1
        delta = np.zeros(w.shape[0])
        for u, val in go.items():
            if val:
                delta += val * w[:, lf.index(u)].astype(np.float64).reshape(w.shape[0], -1).sum(axis=1)
    else:
        oi = op.attrs.get("layout") == "oi"
        axis_in = 1 if oi else 0
        wt = w if oi else w.T  # [O, I], a view
        delta = np.zeros(wt.shape[0])
        for u, val in go.items():
            if val:
                delta += val * wt[:, lf.index(u)].astype(np.float64).sum(axis=1)
        alpha, beta = float(op.attrs.get("alpha", 1.0)), float(op.attrs.get("beta", 1.0))
        delta = delta * alpha / beta
    if np.any(delta):
        edits.add_bias(op, delta)
    edits.cut(op.params["weight"], axis_in, idx)


def macs_after(graph: Graph, edits: Edits) -> int:
    """Multiply-adds of :func:`macs` once ``edits`` are applied: every Conv / Gemm / MatMul keeps the
    fraction of its outputs and inputs left (no second graph of the edited model is built)."""
    total = 0
    for op in graph.ops:
        w = op.params.get("weight")
        out = graph.shapes.get(op.outputs[0]) if op.outputs else None
        if w is None or out is None or op.kind not in ("conv", "linear"):
            continue
        shape = list(w.value.shape)
        for axis, idx in edits.delete.get(w.key, {}).items():
            shape[axis] -= len(idx)
        if op.kind == "conv":
            o_axis, fan = 0, math.prod(shape[1:])
        else:
            oi = op.attrs.get("layout") == "oi"
            o_axis, fan = (0, shape[1]) if oi else (1, shape[0])
        n_out = math.prod(out) * shape[o_axis] // max(1, int(w.value.shape[o_axis]))
        total += n_out * fan
    return total


def macs(graph: Graph) -> int:
    """Multiply-adds of one sample through the graph's Conv / Gemm / MatMul ops (shapes known)."""
    total = 0
    for op in graph.ops:
        w = op.params.get("weight")
        out = graph.shapes.get(op.outputs[0]) if op.outputs else None
        if w is None or out is None:
            continue
        n_out = math.prod(out)
        if op.kind == "conv":
            total += n_out * math.prod(w.value.shape[1:])
        elif op.kind == "linear":
            fan_in = w.value.shape[1] if op.attrs.get("layout") == "oi" else w.value.shape[0]
            total += n_out * int(fan_in)
    return int(total)
