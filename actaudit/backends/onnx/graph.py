"""A read-only index over one ONNX graph (or subgraph): producers, consumers, constants, types.

Subgraphs (``If`` branches, ``Loop`` bodies) see their outer scopes, so a lookup that
misses here continues in the parent scope, as onnxruntime resolves names.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import proto as onnx

DEFAULT_DOMAINS = ("", "ai.onnx")


@dataclass
class Scope:
    """One graph body with indexes; ``owner`` is the node whose attribute holds it."""

    graph: onnx.GraphProto
    parent: Scope | None = None
    owner: onnx.NodeProto | None = None
    attr: str = ""
    path: str = ""  # readable location, e.g. "If_0/then_branch"; "" at top level
    order: tuple[int, ...] = ()  # graph-order key of the owner node, for sorting sites
    loops: int = 0  # enclosing Loop/Scan bodies
    ifs: int = 0  # enclosing If branches
    producers: dict[str, tuple[int, onnx.NodeProto]] = field(default_factory=dict)
    consumers: dict[str, list[onnx.NodeProto]] = field(default_factory=lambda: defaultdict(list))
    value_types: dict[str, tuple[int, int | None, tuple[int | None, ...] | None]] = field(
        default_factory=dict
    )
    initializers: dict[str, onnx.TensorProto] = field(default_factory=dict)
    _consts: dict[str, np.ndarray | None] = field(default_factory=dict)

    @classmethod
    def build(cls, graph: onnx.GraphProto, **kw: Any) -> Scope:
        s = cls(graph, **kw)
        for i, node in enumerate(graph.node):
            for out in node.output:
                if out:
                    s.producers[out] = (i, node)
            for inp in node.input:
                if inp:
                    s.consumers[inp].append(node)
        for vi in [*graph.input, *graph.output, *graph.value_info]:
            s.value_types[vi.name] = _type_of(vi.type)
        for init in graph.initializer:
            s.initializers[init.name] = init
            s.value_types.setdefault(
                init.name, (init.data_type, len(init.dims), tuple(int(d) for d in init.dims))
            )
        return s

    # -- lookups -------------------------------------------------------------------------
    def producer(self, name: str) -> onnx.NodeProto | None:
        """The node that computes ``name`` in this scope (not outer ones)."""
        hit = self.producers.get(name)
        return hit[1] if hit else None

    def index(self, node: onnx.NodeProto) -> int:
        hit = self.producers.get(node.output[0]) if node.output else None
        return hit[0] if hit else -1

    def uses(self, name: str) -> list[onnx.NodeProto]:
        return list(self.consumers.get(name, []))

    def const(self, name: str) -> np.ndarray | None:
        """The value of a constant tensor (initializer, ``Constant`` node, or Identity/Cast of one)."""
        if not name:
            return None
        if name in self._consts:
            return self._consts[name]
        value = self._const_here(name)
        if (
            value is None
            and name not in self.producers
            and name not in self.initializers
            and self.parent is not None
        ):
            value = self.parent.const(name)
        self._consts[name] = value
        return value

    def _const_here(self, name: str) -> np.ndarray | None:
        if name in self.initializers:
            return _to_array(self.initializers[name])
        node = self.producer(name)
        if node is None:
            return None
        if node.op_type == "Constant" and node.domain in DEFAULT_DOMAINS:
            return constant_node_value(node)
        if node.op_type in ("Identity", "Cast") and node.domain in DEFAULT_DOMAINS and node.input:
            v = self.const(node.input[0])
            if v is None:
                return None
            if node.op_type == "Cast":
                to = attr(node, "to", None)
                if to is None:
                    return None
                try:
                    v = v.astype(onnx.tensor_dtype_to_np_dtype(int(to)))
                except (KeyError, TypeError, ValueError):
                    return None
            return v
        return None

    def scalar(self, name: str) -> float | None:
        v = self.const(name)
        if v is None or v.size != 1:
            return None
        try:
            return float(v.reshape(()))
        except (TypeError, ValueError):
            return None

    def type_of(self, name: str) -> tuple[int, int | None, tuple[int | None, ...] | None]:
        """(elem_type, rank, shape) as far as static shape inference knows; 0/None when unknown."""
        s: Scope | None = self
        while s is not None:
            if name in s.value_types:
                return s.value_types[name]
            if name in s.producers:
                break
            s = s.parent
        return (0, None, None)


def _type_of(t: onnx.TypeProto) -> tuple[int, int | None, tuple[int | None, ...] | None]:
    if not t.HasField("tensor_type"):
        return (0, None, None)
    tt = t.tensor_type
    if not tt.HasField("shape"):
        return (tt.elem_type, None, None)
    dims = tuple(int(d.dim_value) if d.HasField("dim_value") else None for d in tt.shape.dim)
    return (tt.elem_type, len(dims), dims)


def _to_array(t: onnx.TensorProto) -> np.ndarray | None:
    if t.data_location == onnx.TensorProto.EXTERNAL:
        return None  # a weight left in its data file: not read (onnx would look in the working folder)
    try:
        return onnx.to_array(t)
    except Exception:  # external data not loaded, exotic types: not a usable constant
        return None


def constant_node_value(node: onnx.NodeProto) -> np.ndarray | None:
    for a in node.attribute:
        if a.name == "value":
            return _to_array(a.t)
        if a.name == "value_float":
            return np.array(a.f, dtype=np.float32)
        if a.name == "value_floats":
            return np.array(list(a.floats), dtype=np.float32)
        if a.name == "value_int":
            return np.array(a.i, dtype=np.int64)
        if a.name == "value_ints":
            return np.array(list(a.ints), dtype=np.int64)
    return None


def attr(node: onnx.NodeProto, name: str, default: Any) -> Any:
    for a in node.attribute:
        if a.name == name:
            return onnx.get_attribute_value(a)
    return default


def subgraphs(node: onnx.NodeProto) -> list[tuple[str, onnx.GraphProto]]:
    out = []
    for a in node.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            out.append((a.name, a.g))
        elif a.type == onnx.AttributeProto.GRAPHS:
            out.extend((f"{a.name}[{i}]", g) for i, g in enumerate(a.graphs))
    return out


def opset_version(model: onnx.ModelProto, domain: str = "") -> int:
    for o in model.opset_import:
        if o.domain in ((domain,) if domain else DEFAULT_DOMAINS):
            return int(o.version)
    return 0
