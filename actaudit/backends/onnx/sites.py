"""Which ONNX nodes are activation sites, what their pre-activation tensor is, and their unit axis.

A site is one activation call in the graph: a single op (``Relu``, ``Clip``, …) or an
exporter's spelled-out pattern (``x * Sigmoid(x)`` is one silu site; the ``Erf`` and
``Tanh`` GELU formulas, ``x * Tanh(Softplus(x))``, ``x * Clip(x + 3, 0, 6) / 6`` and
``x / (1 + |x|)`` are one site each, and their inner ``Sigmoid``/``Tanh`` are not
reported as saturating units). Sites inside ``If`` branches and ``Loop`` bodies are
found too; those the instrumentation cannot reach carry an ``uncovered`` reason.

Names follow the PyTorch backend where the dynamo exporter recorded module paths
(``pkg.torch.onnx.name_scopes``): ``layer1.0.relu`` for an activation module,
``block/relu`` for a functional call inside ``block``, ``#k`` when one module runs at
several places. Otherwise a site is named after its node (or its output).
"""

from __future__ import annotations

from . import proto as onnx
from .graph import DEFAULT_DOMAINS, Scope, subgraphs
from .naming import _dedupe
from .patterns import _patterns
from .single import _single
from .site import Found, OnnxSite

__all__ = ["Found", "OnnxSite", "by_name", "find_sites"]


def find_sites(graph: onnx.GraphProto) -> Found:
    """Every activation site of the model, in graph order (subgraph sites at their owner)."""
    found = Found()
    top = Scope.build(graph)
    _scan_scope(top, found)
    found.sites.sort(key=lambda s: s.order)
    _dedupe(found.sites)
    return found


def by_name(sites: list[OnnxSite]) -> dict[str, OnnxSite]:
    """Site by name, and by its former name where it had one (a plan made from an older report)."""
    out = {s.former: s for s in sites if s.former}
    out.update((s.name, s) for s in sites)
    return out


def _scan_scope(scope: Scope, found: Found) -> None:
    sites, taken = _patterns(scope)
    for i, node in enumerate(scope.graph.node):
        if id(node) in taken:
            continue
        site = _single(scope, node, i)
        if site is not None:
            sites.append(site)
        for k, (attr_name, g) in enumerate(subgraphs(node)):
            kw = {
                "parent": scope,
                "owner": node,
                "attr": attr_name,
                "path": f"{scope.path + '/' if scope.path else ''}{node.name or node.op_type}/{attr_name}",
                "order": (*scope.order, i, k),
                "loops": scope.loops + (node.op_type in ("Loop", "Scan")),
                "ifs": scope.ifs + (node.op_type == "If"),
            }
            sub = Scope.build(g, **kw)
            _scan_scope(sub, found)
    for site in sites:
        if site.uncovered is None and not _floating(site):
            continue  # a Clip of integer indices, a Relu of counts: no activation units there
        site.uncovered = site.uncovered or _reach(site.scope)
        found.sites.append(site)


_FLOATS = frozenset(
    [
        onnx.TensorProto.FLOAT,
        onnx.TensorProto.DOUBLE,
        onnx.TensorProto.FLOAT16,
        onnx.TensorProto.BFLOAT16,
    ]
)


def _floating(site: OnnxSite) -> bool:
    """Activation sites are floating-point tensors; an unknown type (0) is kept."""
    elem = site.elem_type
    return elem == 0 or elem in _FLOATS


def _reach(scope: Scope) -> str | None:
    """Why a subgraph's statistics cannot be brought out, or None if they can."""
    s: Scope | None = scope
    loop_seen = False
    while s is not None and s.owner is not None:
        op = s.owner.op_type if s.owner.domain in DEFAULT_DOMAINS else f"{s.owner.domain}.{s.owner.op_type}"
        if op not in ("If", "Loop"):
            return f"inside a {op} body, whose outputs cannot carry per-unit statistics out"
        if op == "Loop":
            if loop_seen:
                return "inside nested Loop bodies; only one level of Loop is instrumented"
            loop_seen = True
        elif loop_seen:
            # An If inside a Loop body yields differently shaped outputs per iteration.
            return "inside an If branch within a Loop body; statistics there cannot be stacked per iteration"
        s = s.parent
    return None
