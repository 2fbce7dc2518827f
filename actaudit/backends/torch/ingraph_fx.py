"""Per-site statistics inside a ``torch.export`` program's graph (the ``.pt2`` side of :mod:`.ingraph`).

Same rule, same op and same accumulators as the TorchScript path: after the first batch, when
every site the dispatch capture saw is one top-level node of the program's graph, in graph
order, later batches run a copy of that graph with ``actaudit_ingraph::stats`` nodes: one per
large site, one per stack of small sites of a shape. The copy shares the loaded program's
parameters and submodules (no weights are copied) and holds only the program's own nodes plus
ours; the caller's module is not changed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import fx

from . import ingraph
from .graphsites import export_graph_sites, export_site_nodes
from .ops import op_name

if TYPE_CHECKING:
    from .ingraph import InGraph, _Target
    from .sites import Recorder, _Site


def plan(module: Any, rec: Recorder) -> InGraph | None:
    """The in-graph capture for batches after the first: TorchScript or torch.export, or None."""
    if not isinstance(module, fx.GraphModule) or not ingraph.enabled():
        return ingraph.plan(module, rec)
    found, ingraph.last_choice = plan_fx(module, rec)
    return found


def plan_fx(gm: fx.GraphModule, rec: Recorder) -> tuple[InGraph | None, str]:
    """(the instrumented copy, "graph") or (None, why the dispatch capture stays)."""
    try:
        pairs = export_site_nodes(gm)
        if len(export_graph_sites(gm)) != len(pairs):
            return None, "recurrent, fused or GLU activations"
        points, why = ingraph.match([(g, [n]) for g, n in pairs], rec, _point)
        if points is None:
            return None, why
        ingraph.register()
        graph = fx.Graph()
        graph._codegen = gm.graph._codegen
        copies: dict[fx.Node, fx.Node] = {}
        graph.output(graph.graph_copy(gm.graph, copies))
        targets = _instrument(graph, [(s, copies[n], copies[x]) for s, n, x in points])
        graph.lint()
        copy = fx.GraphModule(gm, graph)
        for name in ("_in_spec", "_out_spec"):  # the pytree calling convention of ExportedProgram.module()
            if hasattr(gm, name):
                setattr(copy, name, getattr(gm, name))
    except Exception as e:  # a program this version of torch will not let us extend: keep dispatching
        return None, f"graph not instrumented: {type(e).__name__}: {e}"[:300]
    ingraph._targets.update(targets)
    return ingraph.InGraph(copy, None, targets), "graph"


def _point(nodes: list[fx.Node]) -> tuple[fx.Node, fx.Node] | None:
    (n,) = nodes
    x = n.args[0] if n.args else None
    return (n, x) if isinstance(x, fx.Node) else None


def _stats(graph: fx.Graph, x: fx.Node, k: int) -> fx.Node:
    return graph.call_function(torch.ops.actaudit_ingraph.stats.default, (x, k))


def _instrument(graph: fx.Graph, points: list[tuple[_Site, fx.Node, fx.Node]]) -> dict[int, _Target]:
    groups: dict[tuple[Any, ...], list[tuple[_Site, fx.Node, fx.Node]]] = {}
    targets: dict[int, _Target] = {}
    for p in points:
        key = ingraph.group_key(p[0])
        if key is not None:
            groups.setdefault(key, []).append(p)
            continue
        site, node, x = p
        k = next(ingraph._ids)
        targets[k] = ingraph.target([site])
        with graph.inserting_before(node):
            _stats(graph, x, k)
    for members in groups.values():
        for chunk in ingraph.chunks(members):
            k = next(ingraph._ids)
            targets[k] = t = ingraph.target([s for s, _, _ in chunk])
            if len(chunk) == 1:
                with graph.inserting_before(chunk[0][1]):
                    _stats(graph, chunk[0][2], k)
                continue
            values = []
            for _, node, x in chunk:
                if _written(x):
                    with graph.inserting_before(node):
                        x = graph.call_function(torch.ops.aten.clone.default, (x,))
                values.append(x)
            with graph.inserting_after(chunk[-1][1]):
                stacked = graph.call_function(torch.ops.aten.stack.default, (values, t.dim))
            with graph.inserting_after(stacked):
                _stats(graph, stacked, k)
    return targets


def _written(x: fx.Node) -> bool:
    """Does an in-place op (the activation itself, or a later one) write to ``x``?"""
    return any(u.op == "call_function" and op_name(u.target).endswith("_") for u in x.users)
