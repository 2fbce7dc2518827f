"""The facts ``inspect`` shows about a PyTorch model: graph size, parameters, inputs and outputs.

A ``torch.export`` program declares its inputs and outputs with dtypes and symbolic
dimensions (``s0``, or the names given to ``torch.export.Dim``); a TorchScript module
declares argument names and types only; an eager module declares neither.
"""

from __future__ import annotations

from typing import Any

import torch


def _shape(val: object) -> list[int | str] | None:
    shape = getattr(val, "shape", None)
    if shape is None:
        return None
    out: list[int | str] = []
    for d in shape:
        # A SymInt converts to int (its example value): keep its symbol instead (s0, or a Dim's name).
        out.append(str(d) if isinstance(d, torch.SymInt) else int(d))
    return out


def _dtype(val: object) -> str:
    dt = getattr(val, "dtype", None)
    return str(dt).removeprefix("torch.") if dt is not None else "?"


def model_facts(tm: Any) -> dict[str, object]:
    mod = tm.module
    params = list(mod.parameters()) if hasattr(mod, "parameters") else []
    facts: dict[str, object] = {
        "producer": f"torch {torch.__version__.split('+')[0]} ({tm.fmt})",
        "parameters": int(sum(p.numel() for p in params)),
        "parameter_tensors": len(params),
    }
    ep = tm.exported
    if ep is not None:
        nodes = list(ep.graph.nodes)
        facts["nodes"] = sum(1 for n in nodes if n.op == "call_function")
        placeholders = {n.name: n for n in nodes if n.op == "placeholder"}
        facts["inputs"] = [
            {
                "name": name,
                "shape": _shape(placeholders[name].meta.get("val")) if name in placeholders else None,
                "dtype": _dtype(placeholders[name].meta.get("val")) if name in placeholders else "?",
            }
            for name in ep.graph_signature.user_inputs
        ]
        out_node = next((n for n in nodes if n.op == "output"), None)
        outs: list[dict[str, object]] = []
        if out_node is not None:
            names = list(ep.graph_signature.user_outputs)
            args = out_node.args[0] if out_node.args else ()
            by_name = {
                getattr(a, "name", None): a for a in (args if isinstance(args, (list, tuple)) else [args])
            }
            for name in names:
                a = by_name.get(name)
                val = a.meta.get("val") if a is not None and hasattr(a, "meta") else None
                outs.append({"name": name, "shape": _shape(val), "dtype": _dtype(val)})
        facts["outputs"] = outs
        return facts
    if tm.fmt == "torchscript":
        try:
            graph = mod.inlined_graph
            facts["nodes"] = sum(1 for _ in graph.nodes())
        except Exception:
            pass
        try:
            schema = mod.forward.schema
            facts["inputs"] = [
                {"name": a.name, "shape": None, "dtype": str(a.type)} for a in schema.arguments[1:]
            ]
            facts["outputs"] = [
                {"name": r.name or f"output{i}", "shape": None, "dtype": str(r.type)}
                for i, r in enumerate(schema.returns)
            ]
        except Exception:
            pass
        return facts
    facts["modules"] = sum(1 for _ in mod.named_modules()) if hasattr(mod, "named_modules") else None
    return facts
