"""Which axis of an activation's input holds its units, followed from the op that produced it.

Conv outputs are ``[N, C, ...]`` (unit axis 1); MatMul / Gemm outputs ``[N, ..., F]``
(last axis). The producer is followed through ops that keep the unit layout
(normalisations, bias and residual adds, pooling, reshapes that keep the axis); when it
says nothing, the activation's consumer may (:func:`consumer_axis`).
"""

from __future__ import annotations

import numpy as np

from ... import unitaxis as ua
from . import proto as onnx
from .graph import DEFAULT_DOMAINS, Scope, attr

CONV = "conv"
LINEAR = "linear"

_PRODUCERS = {
    "Conv": CONV,
    "ConvTranspose": CONV,
    "ConvInteger": CONV,
    "QLinearConv": CONV,
    "FusedConv": CONV,
    "NhwcConv": None,
    "MatMul": LINEAR,
    "Gemm": LINEAR,
    "MatMulInteger": LINEAR,
    "QLinearMatMul": LINEAR,
    "FusedMatMul": LINEAR,
    "FusedGemm": LINEAR,
    "Einsum": LINEAR,
}
_POOLS = frozenset(
    [
        "MaxPool",
        "AveragePool",
        "LpPool",
        "GlobalAveragePool",
        "GlobalMaxPool",
        "GlobalLpPool",
        "Resize",
        "Upsample",
    ]
)
# Ops whose output keeps the unit layout of their first tagged input.
_CARRIERS = (
    frozenset(
        [
            "BatchNormalization",
            "InstanceNormalization",
            "GroupNormalization",
            "LayerNormalization",
            "Add",
            "Sub",
            "Mul",
            "Div",
            "Identity",
            "Cast",
            "Dropout",
            "Neg",
            "Relu",
            "LeakyRelu",
            "PRelu",
            "Elu",
            "Selu",
            "Celu",
            "Gelu",
            "Mish",
            "Softplus",
            "HardSwish",
            "Sigmoid",
            "Tanh",
            "HardSigmoid",
            "Softsign",
            "Clip",
            "Max",
            "Min",
            "Where",
        ]
    )
    | _POOLS
    | {"Pad", "LRN"}
)  # pooling, resampling and padding change the spatial axes, not the channels
_RESHAPES = frozenset(["Reshape", "Flatten", "Squeeze", "Unsqueeze"])


def unit_tag(scope: Scope, name: str, depth: int = 64) -> str | None:
    """CONV / LINEAR from the op that produced ``name``, through carriers; None when unknown."""
    s: Scope | None = scope
    seen: set[str] = set()
    while depth > 0:
        depth -= 1
        while s is not None and s.producer(name) is None:
            s = s.parent
        if s is None or name in seen:
            return None
        seen.add(name)
        node = s.producer(name)
        assert node is not None
        op = node.op_type
        if op in _PRODUCERS:
            return _PRODUCERS[op]
        if op in _RESHAPES:
            back = _shape_source(s, node)
            if back is not None:
                # Reshape(y, Shape(t)) gives t's layout back (GroupNorm's export: reshape,
                # InstanceNormalization, reshape to the input's shape).
                name = back
                continue
            tag = unit_tag(s, node.input[0], depth)
            return _reshape_tag(tag, s.type_of(node.input[0])[2], s.type_of(name)[2])
        if op not in _CARRIERS:
            return None
        nxt = None
        for inp in node.input:
            if inp and s.const(inp) is None and unit_tag(s, inp, min(depth, 16)) is not None:
                nxt = inp
                break
        if nxt is None:
            return None
        name = nxt
    return None


_SAME = frozenset(["Concat", "Split", "Slice", "Pad", "LRN", "Softmax", "LogSoftmax", "Expand", "Tile"])
_REDUCE = frozenset(
    ["ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2", "ReduceL1"]
)
_RNN_OUT = frozenset(["LSTM", "GRU", "RNN"])


def _ints_of(scope: Scope, node: onnx.NodeProto, name: str, k: int) -> list[int] | None:
    """An int-list attribute, or (newer opsets) the constant input ``k``."""
    v = attr(node, name, None)
    if v is not None:
        return [int(a) for a in v]
    if len(node.input) > k and node.input[k]:
        c = scope.const(node.input[k])
        return None if c is None else [int(a) for a in np.asarray(c).ravel()]
    return None


def unit_axis_tag(scope: Scope, name: str, depth: int = 64) -> ua.Tag | None:
    """The unit axis of ``name`` followed from its Conv / MatMul producer (:mod:`actaudit.unitaxis`).

    Needs static ranks along the way (shapes where a Reshape maps the axis); None when the
    producer is unknown or the axis is lost.
    """
    s: Scope | None = scope
    while s is not None and s.producer(name) is None:
        s = s.parent
    if s is None or depth <= 0:
        return None
    node = s.producer(name)
    assert node is not None
    rank = s.type_of(name)[1]
    if rank is None:
        return None
    op = node.op_type if node.domain in DEFAULT_DOMAINS or node.domain == "com.microsoft" else ""
    if op in _PRODUCERS:
        origin = _PRODUCERS[op]
        return ua.produced(origin, rank) if origin else None
    if op in _RNN_OUT:
        return ua.produced(LINEAR, rank)
    if op in _RESHAPES:
        back = _shape_source(s, node)
        if back is not None:
            return unit_axis_tag(s, back, depth - 1)
    inputs = (
        [node.input[0]] if op in _RESHAPES or op in ("Transpose", "Gather", "Split", "Slice") else node.input
    )
    src, tag = None, None
    for inp in inputs:
        if inp and s.const(inp) is None:
            tag = unit_axis_tag(s, inp, depth - 1)
            if tag is not None:
                src = inp
                break
    if src is None or tag is None:
        return None
    in_type = s.type_of(src)
    in_rank, in_shape = in_type[1], in_type[2]
    if in_rank is None:
        return None
    if op in _POOLS:
        return ua.spatial(tag, rank)
    if op in _SAME:
        return ua.same(tag, rank) if rank == in_rank else None
    if op in _CARRIERS:
        return ua.elementwise(tag, in_rank, rank)
    if op == "Transpose":
        perm = attr(node, "perm", None)
        return ua.permute(tag, [int(p) for p in perm] if perm is not None else list(range(in_rank))[::-1])
    if op == "Gather":
        index_rank = s.type_of(node.input[1])[1]
        return None if index_rank is None else ua.gather(tag, int(attr(node, "axis", 0)), index_rank, in_rank)
    if op == "Squeeze":
        axes = _ints_of(s, node, "axes", 1)
        if axes is not None:
            return ua.remove_axes(tag, axes, in_rank, squeeze=True)
        if in_shape is not None and not tag.whole and in_shape[tag.axis] == 1:
            return ua.remove_axes(tag, [tag.axis], in_rank, squeeze=True)  # Squeeze without axes
    if op == "Unsqueeze":
        axes = _ints_of(s, node, "axes", 1)
        if axes is not None:
            return ua.insert_axes(tag, axes, rank)
    if op in _REDUCE:
        axes = _ints_of(s, node, "axes", 1)
        if axes is None:
            return None
        if int(attr(node, "keepdims", 1)):
            return None if tag.axis in [a % in_rank for a in axes] else ua.same(tag, rank)
        return ua.remove_axes(tag, axes, in_rank)
    if op in _RESHAPES:
        return ua.reshape(tag, in_shape, s.type_of(name)[2])
    return None


# Quantisation keeps every axis: an int8 model's activation reaches its Conv through DynamicQuantizeLinear.
_QUANTIZE = frozenset(["DynamicQuantizeLinear", "QuantizeLinear", "DequantizeLinear"])
_CONSUMER_PASS = _CARRIERS | _SAME | _QUANTIZE
_CONV_CONSUMERS = frozenset(["Conv", "ConvTranspose", "ConvInteger", "QLinearConv"])
_MATMUL_CONSUMERS = frozenset(["MatMul", "Gemm", "MatMulInteger", "QLinearMatMul"])


def consumer_axis(scope: Scope, y: str, rank: int | None, depth: int = 8) -> int | None:
    """The unit axis a consumer of the activation output ``y`` implies: Conv → 1, MatMul/Gemm → last
    (-1 when the rank is unknown before run time).

    Followed through ops that keep every axis in place (elementwise, Pad, Concat, …).
    """
    frontier = [y]
    seen = {y}
    for _ in range(depth):
        nxt = []
        for t in frontier:
            for n in scope.uses(t):
                if n.op_type in _CONV_CONSUMERS and n.input[0] == t and (rank is None or rank >= 3):
                    return 1
                if n.op_type in _MATMUL_CONSUMERS and n.input[0] == t and (rank is None or rank >= 2):
                    return -1 if rank is None else rank - 1
                if n.op_type in _CONSUMER_PASS and n.op_type not in _POOLS and n.output:
                    out = n.output[0]
                    if out not in seen and scope.type_of(out)[1] == rank:
                        seen.add(out)
                        nxt.append(out)
        frontier = nxt
    return None


def _shape_source(scope: Scope, node: onnx.NodeProto) -> str | None:
    """``t`` when ``node`` is ``Reshape(y, Shape(t))`` (the whole shape of ``t``)."""
    if node.op_type != "Reshape" or len(node.input) < 2:
        return None
    shape = scope.producer(node.input[1])
    if (
        shape is None
        or shape.op_type != "Shape"
        or attr(shape, "start", 0) != 0
        or attr(shape, "end", None) is not None
    ):
        return None
    return str(shape.input[0])


def _reshape_tag(
    tag: str | None, src: tuple[int | None, ...] | None, out: tuple[int | None, ...] | None
) -> str | None:
    if tag is None or src is None or out is None or not src or not out:
        return None
    if tag == LINEAR and src[-1] is not None and src[-1] == out[-1]:
        return LINEAR
    if tag == CONV and len(src) == len(out) and len(src) > 1 and src[1] is not None and src[1] == out[1]:
        return CONV
    return None
