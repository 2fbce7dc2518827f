"""Edits written back into an ONNX model for ``actaudit prune``: initializers, Constant nodes, new biases."""

from __future__ import annotations

import math
import mmap

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ...edit.cuts import Edits
from ...edit.graph import Graph

_FLOAT = (
    onnx.TensorProto.FLOAT,
    onnx.TensorProto.DOUBLE,
    onnx.TensorProto.FLOAT16,
    onnx.TensorProto.BFLOAT16,
)


def _drop_pages(a: np.ndarray) -> None:
    """Return a memory-mapped weight's pages to the page cache once read: they are clean and
    would otherwise count as this process's memory beside the edited copy."""
    mm = getattr(a, "_mmap", None)
    if isinstance(mm, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED"):
        mm.madvise(mmap.MADV_DONTNEED)


def _name(node: onnx.NodeProto) -> str:
    return node.name or node.output[0]


def apply(
    model: onnx.ModelProto, graph: Graph, edits: Edits, base: onnx.ModelProto | None = None
) -> onnx.ModelProto:
    """A copy of ``model`` with the edits written into its initializers and Constant nodes.

    ``base``: the same graph with its weights left in the input's external data (over 2 GB):
    it is copied instead, and only the edited tensors are held in memory.
    """
    m = onnx.ModelProto()
    m.CopyFrom(base if base is not None else model)
    g = m.graph
    inits = {t.name: t for t in g.initializer}
    consts = {n.output[0]: n for n in g.node if n.op_type == "Constant" and n.output}
    for key in edits.keys():  # noqa: SIM118 (Edits is not a dict)
        new = edits.apply(key)
        _drop_pages(edits.params[key].value)
        if key in inits:
            inits[key].CopyFrom(numpy_helper.from_array(new, key))
        elif key in consts:
            node = consts[key]
            del node.attribute[:]
            node.attribute.append(helper.make_attribute("value", numpy_helper.from_array(new)))
        else:  # a folded Reshape/Unsqueeze of constants: its output becomes an initializer
            node = next(n for n in g.node if n.output and n.output[0] == key)
            g.node.remove(node)
            g.initializer.append(numpy_helper.from_array(new, key))
    by_name = {_name(n): n for n in g.node}
    ir_ops = {op.name: op for op in graph.ops}
    taken = set(inits) | {o for n in g.node for o in n.output} | {i.name for i in g.input}
    for op_name, delta in edits.new_bias.items():
        node = by_name[op_name]
        w = ir_ops[op_name].params["weight"]
        dtype = w.value.dtype
        op = ir_ops[op_name]
        out_axis = 0 if op.kind == "conv" or op.attrs.get("layout") == "oi" else 1
        # the new bias covers every original output; cut the outputs the producer side cut
        bias = np.delete(
            np.asarray(delta, dtype=np.float64), sorted(edits.delete.get(w.key, {}).get(out_axis, set()))
        )
        stem = f"{op_name}_actaudit_folded_bias".replace("/", "_")
        bname, k = stem, 1
        while bname in taken:
            bname, k = f"{stem}_{k}", k + 1
        taken.add(bname)
        g.initializer.append(numpy_helper.from_array(bias.astype(dtype), bname))
        while len(node.input) < 3:
            node.input.append("")
        node.input[2] = bname
    del g.value_info[:]
    _drop_unused(g)
    return m


def _drop_unused(g: onnx.GraphProto) -> None:
    """Initializers and Constant nodes nobody reads any more (the sources of folded reshapes)."""
    while True:
        used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
        for n in g.node:
            for a in n.attribute:
                for sub in [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs):
                    used |= {i for sn in sub.node for i in sn.input}
        dead_inits = [t for t in g.initializer if t.name not in used]
        dead_nodes = [
            n
            for n in g.node
            if n.op_type in ("Constant", "Reshape", "Unsqueeze", "Squeeze", "Identity", "Cast")
            and n.output
            and all(o not in used for o in n.output)
            and all(not i or i in {t.name for t in g.initializer} or i in _const_outputs(g) for i in n.input)
        ]
        if not dead_inits and not dead_nodes:
            return
        for t in dead_inits:
            g.initializer.remove(t)
        for n in dead_nodes:
            g.node.remove(n)
        inputs = {t.name for t in dead_inits}
        keep = [i for i in g.input if i.name not in inputs]
        if len(keep) != len(g.input):
            del g.input[:]
            g.input.extend(keep)


def _const_outputs(g: onnx.GraphProto) -> set[str]:
    return {n.output[0] for n in g.node if n.op_type == "Constant" and n.output}


def count_params(model: onnx.ModelProto) -> int:
    """Float values held in initializers and Constant nodes."""
    n = sum(math.prod(t.dims) for t in model.graph.initializer if t.data_type in _FLOAT)
    for node in model.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value" and a.t.data_type in _FLOAT:
                    n += math.prod(a.t.dims)
    return int(n)
