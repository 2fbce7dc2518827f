"""A small dataflow graph of the ops pruning and interval bounds care about, built by each backend.

Backends translate their graph (ONNX nodes, ``torch.export`` aten calls) into :class:`Op`
records in topological order. Weights travel as numpy arrays with the backend's own key,
so the planner (:mod:`actaudit.edit.cuts`) and the bound propagation
(:mod:`actaudit.prune.interval`) never import torch or onnx. Anything a backend does not
translate becomes an ``other`` op: it blocks pruning through it and makes bounds infinite.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# kind -> what the op computes (unit axis 1 is the channel axis of conv layouts)
KINDS = {
    "conv": "convolution; params weight [O, I/g, *k], bias [O]; attrs strides, pads (begins+ends), dilations, groups",
    "linear": "x @ W' * alpha + bias * beta; weight layout 'oi' ([O, I]) or 'io' ([I, O]); units on the last axis",
    "bn": "inference batch norm on axis 1; params scale, bias, mean, var; attr eps",
    "scale": "x + c, x - c, c - x, x * c or x / c with a constant c (param c; attr form add|sub|rsub|mul|div)",
    "act": "elementwise activation; attr act: a kind of actaudit.kinds (relu, clip(lo, hi), leaky_relu(alpha), tanh, …)",
    "add": "sum of two computed tensors (residual)",
    "mul": "product of two computed tensors (a gate); only bounds use it",
    "concat": "concatenation along attr axis",
    "flatten": "flatten from attr axis on (a Reshape to [N, -1] too)",
    "reshape": "any other reshape/view/transpose: elements move, values do not change",
    "maxpool": "max pooling; attrs kernel, strides, pads, dilations",
    "avgpool": "average pooling; attrs kernel, strides, pads, count_include_pad",
    "gap": "mean over every axis after 1, keeping or dropping them (attr keepdims)",
    "reduce": "mean, max, min or sum (attr how) over attr axes (non-negative, never the batch), attr keepdims",
    "identity": "copies its input (Identity, Dropout at inference, a float cast)",
    "other": "anything else; attr op names it",
}


@dataclass
class Param:
    """A constant tensor of an op, under the backend's key (initializer name, state-dict key)."""

    key: str
    value: np.ndarray
    shared: bool = False  # read elsewhere too: editing it would change another op


@dataclass
class Op:
    name: str
    kind: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Param] = field(default_factory=dict)

    @property
    def label(self) -> str:
        op = self.attrs.get("op", self.kind)
        return f"{op} {self.name}" if self.name else str(op)


@dataclass
class Graph:
    ops: list[Op]
    inputs: list[str]
    outputs: list[str]
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # one sample, batch axis included as 1

    def __post_init__(self) -> None:
        self.producer: dict[str, Op] = {}
        self.consumers: dict[str, list[Op]] = defaultdict(list)
        for op in self.ops:
            for o in op.outputs:
                self.producer[o] = op
            for i in op.inputs:
                if i:
                    self.consumers[i].append(op)

    def readers(self, value: str) -> list[Op]:
        return list(self.consumers.get(value, []))

    def is_output(self, value: str) -> bool:
        return value in self.outputs


def unit_count(op: Op) -> int | None:
    """Output units of a producer (conv out channels, linear out features)."""
    w = op.params.get("weight")
    if w is None:
        return None
    if op.kind == "conv":
        return int(w.value.shape[0])
    if op.kind == "linear":
        return int(w.value.shape[0] if op.attrs.get("layout") == "oi" else w.value.shape[1])
    return None


def release_values(graph: Graph) -> None:
    """Drop the weights the graph holds, keeping each one's shape and dtype (a zero-size view).

    Once the edited model is built, only shapes are read (MACs): on a model of gigabytes this
    frees one whole copy of its weights before the checks and the write.
    """
    for op in graph.ops:
        for p in op.params.values():
            p.value = np.broadcast_to(np.zeros((), dtype=p.value.dtype), p.value.shape)
