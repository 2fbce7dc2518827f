"""The facts ``inspect`` shows about an ONNX model, as Polygraphy's ``inspect model`` shows them.

Opset imports, producer, IR version, node and initializer counts, and inputs and outputs
with their dtypes and symbolic dimension names (``batch``, ``n``), not ``?``.
"""

from __future__ import annotations

from . import proto as onnx


def _dims(vi: onnx.ValueInfoProto) -> list[int | str] | None:
    tt = vi.type.tensor_type
    if not tt.HasField("shape"):
        return None
    out: list[int | str] = []
    for d in tt.shape.dim:
        if d.HasField("dim_value"):
            out.append(int(d.dim_value))
        else:
            out.append(d.dim_param or "?")
    return out


def _dtype(vi: onnx.ValueInfoProto) -> str:
    elem = vi.type.tensor_type.elem_type
    if not elem:
        return "?"
    try:
        return str(onnx.tensor_dtype_to_np_dtype(elem))
    except Exception:  # bfloat16, float8: no numpy dtype
        return onnx.TensorProto.DataType.Name(elem).lower()


def model_facts(model: onnx.ModelProto) -> dict[str, object]:
    g = model.graph
    inits = {i.name for i in g.initializer}
    return {
        "producer": " ".join(x for x in (model.producer_name, model.producer_version) if x) or None,
        "ir_version": int(model.ir_version),
        "opsets": {(o.domain or "ai.onnx"): int(o.version) for o in model.opset_import},
        "nodes": len(g.node),
        "initializers": len(g.initializer),
        "parameters": int(sum(_numel(t) for t in g.initializer)),
        "inputs": [
            {"name": v.name, "shape": _dims(v), "dtype": _dtype(v)} for v in g.input if v.name not in inits
        ],
        "outputs": [{"name": v.name, "shape": _dims(v), "dtype": _dtype(v)} for v in g.output],
    }


def _numel(t: onnx.TensorProto) -> int:
    n = 1
    for d in t.dims:
        n *= int(d)
    return n


# Ops that move or regroup values without changing them: an activation behind them still is an output.
_PASS_THROUGH = frozenset(
    {
        "Reshape",
        "Squeeze",
        "Unsqueeze",
        "Flatten",
        "Transpose",
        "Identity",
        "Concat",
        "Split",
        "Slice",
        "Cast",
    }
)
_BOUNDED = frozenset({"Sigmoid", "Tanh", "HardSigmoid", "Softsign", "Clip", "Softmax"})


def output_head_inputs(model: onnx.ModelProto) -> set[str]:
    """Pre-activation tensors of bounded activations whose values reach a graph output unchanged.

    Such a site is a head (a probability map, a score): it is meant to sit near 0 or 1, so
    its saturation is expected and the report says so instead of ranking it worst.
    """
    producer = {o: n for n in model.graph.node for o in n.output}
    heads: set[str] = set()
    seen: set[str] = set()
    todo = [o.name for o in model.graph.output]
    while todo:
        t = todo.pop()
        if t in seen:
            continue
        seen.add(t)
        node = producer.get(t)
        if node is None:
            continue
        if node.op_type in _BOUNDED and node.input:
            heads.add(node.input[0])
        elif node.op_type in _PASS_THROUGH:
            todo.extend(node.input[:1] if node.op_type != "Concat" else node.input)
    return heads
