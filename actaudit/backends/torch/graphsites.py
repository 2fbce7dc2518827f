"""Activation-candidate nodes of compiled graphs (TorchScript, torch.export), in graph order.

The capture aligns the ops it sees at dispatch with these lists to name each call after its
module; the surgery walks the same lists so that a rewrite finds the sites the audit reported.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch

from ...kinds import ACTIVATION_MODULES
from ...naming import derived_base
from .fused import HIDDEN, hidden_reason
from .gelu_graph import fx_erf_gelu, ts_erf_gelu
from .ops import CANDIDATES, op_name

_CANON = {
    "relu6": "hardtanh",
    "selu": "elu",
    "celu": "elu",
    "_prelu_kernel": "prelu",
    "clip": "clamp",
    "clamp_min": "clamp",
}


def canon(name: str) -> str:
    """One name per activation op, whether seen in a graph or at dispatch (``relu_`` → ``relu``)."""
    base = name[:-1] if name.endswith("_") and not name.startswith("_") else name
    return _CANON.get(base, base)


CANON_CANDIDATES = frozenset(canon(n) for n in CANDIDATES)


@dataclass(frozen=True)
class GraphSite:
    """An activation-candidate node of a compiled graph, in graph order."""

    op: str  # the node's op name, e.g. "relu_" or "relu6"
    module: str  # module path, "" at top level
    module_type: str  # class name of the innermost module, "" if unknown
    optional: bool = False  # inside a branch or loop body: may not run
    gate: str = ""  # a recurrent cell's gate ("input_gate"), or FUSED for a fused recurrent op
    producer: str = ""  # module path of the node that computed the input ("" if none or unknown)

    @property
    def base_name(self) -> str:
        if self.gate:
            return f"{self.module}.{self.gate}" if self.module else self.gate
        if self.module and (self.module_type in ACTIVATION_MODULES or self.module_type == GLU):
            return self.module
        op = self.op.rstrip("_") if not self.op.startswith("_") else self.op
        return f"{self.module}/{op}" if self.module else op

    @property
    def derived_name(self) -> str | None:
        """The base after the module that produced the input (:func:`actaudit.naming.derived_base`)."""
        if self.gate or self.op == "glu" or self.base_name == self.module:
            return None
        return derived_base(self.producer, self.module, self.base_name.rpartition("/")[2])


# -- graph site lists ------------------------------------------------------------------
_HIER_RE = re.compile(r"([^.()]*)\(([^()]*)\)")


FUSED = "<fused>"
GLU = "GLU"  # nn.GLU: its gate site is named after the module, as activation modules are
# The candidate ops a recurrent cell's ATen decomposition runs, in order, with their gates.
_CELL_OPS = {
    "lstm_cell": [
        ("sigmoid_", "input_gate"),
        ("sigmoid_", "forget_gate"),
        ("tanh_", "cell_gate"),
        ("sigmoid_", "output_gate"),
        ("tanh", "cell_tanh"),
    ],
    "gru_cell": [("sigmoid_", "reset_gate"), ("sigmoid_", "update_gate"), ("tanh_", "new_gate")],
}
_FUSED_RNN = ("lstm", "gru", "rnn_tanh", "rnn_relu")


def _recurrent_sites(op: str, path: str, mtype: str, optional: bool) -> list[GraphSite]:
    """A recurrent node of a compiled graph as graph sites: one per gate, or one FUSED marker."""
    if op in _CELL_OPS:
        return [GraphSite(o, path, mtype, optional, gate) for o, gate in _CELL_OPS[op]]
    return [GraphSite(op, path, mtype, True, FUSED)]


def torchscript_graph_sites(module: torch.jit.ScriptModule) -> list[GraphSite]:
    """The capture's site list: activation sites plus recurrent nodes (per gate, or FUSED markers)."""
    graph = module.graph.copy()
    torch._C._jit_pass_inline(graph)
    return [site for site, _ in torchscript_site_nodes(graph, module, recurrent=True)]


def torchscript_site_nodes(
    graph: torch._C.Graph, module: torch.jit.ScriptModule, recurrent: bool = False
) -> list[tuple[GraphSite, list[torch._C.Node]]]:
    """Sites of an inlined TorchScript graph in graph order, each with its node(s): a site
    compiled as ``if inplace: relu_ else: relu`` has one node per branch. ``recurrent`` adds
    the recurrent nodes' gate sites (the capture's list; rewriting never sees them)."""
    sites = _block_sites(graph, optional=False, recurrent=recurrent)
    try:
        paths = {
            name: str(getattr(mod, "original_name", type(mod).__name__))
            for name, mod in module.named_modules()
            if name
        }
    except Exception:
        return sites
    return [
        (
            GraphSite(
                g.op,
                _full_path(g.module, g.module_type, paths),
                g.module_type,
                g.optional,
                g.gate,
                _full_path(g.producer, "", paths),
            ),
            n,
        )
        for g, n in sites
    ]


_CONTAINERS = frozenset(["ModuleList", "Sequential", "ModuleDict"])


def _full_path(path: str, mtype: str, paths: dict[str, str]) -> str:
    """TorchScript drops a container's own name from loop-unrolled calls (``0.act`` for
    ``layers.0.act``, ``net.0.conformer.act`` for ``net.encoder_layers.0.conformer.act``):
    restore the eager module path where exactly one module of that class reads as ``path``
    with container names (ModuleList, Sequential, ModuleDict) left out."""
    if not path or path in paths:
        return path
    want = path.split(".")
    matches = [
        p
        for p, t in paths.items()
        if (not mtype or t == mtype) and p.endswith("." + want[-1]) and _skips_containers(p, want, paths)
    ]
    return matches[0] if len(matches) == 1 else path


def _skips_containers(candidate: str, want: list[str], paths: dict[str, str]) -> bool:
    """Is ``want`` the path ``candidate`` with only container modules' own names left out?"""
    parts = candidate.split(".")
    i = 0
    for k, part in enumerate(parts):
        if i < len(want) and part == want[i]:
            i += 1
        elif paths.get(".".join(parts[: k + 1])) not in _CONTAINERS:
            return False
    return i == len(want)


def _block_sites(
    block: torch._C.Graph | torch._C.Block, optional: bool, recurrent: bool = False
) -> list[tuple[GraphSite, list[torch._C.Node]]]:
    sites: list[tuple[GraphSite, list[torch._C.Node]]] = []
    for node in block.nodes():
        kind = node.kind()
        if recurrent and kind.startswith("aten::") and kind[6:] in (*_CELL_OPS, *_FUSED_RNN):
            path, mtype = _parse_hierarchy(node)
            sites.extend((g, [node]) for g in _recurrent_sites(kind[6:], path, mtype, optional))
            continue
        if recurrent and kind == "aten::glu":
            path, mtype = _parse_hierarchy(node)
            sites.append((GraphSite("glu", path, mtype, optional), [node]))
            continue
        if recurrent and kind.startswith("aten::") and hidden_reason(kind[6:]):
            path, mtype = _parse_hierarchy(node)
            sites.append((GraphSite(kind[6:], path, mtype, True, HIDDEN), [node]))
            continue
        if recurrent and kind == "aten::erf" and ts_erf_gelu(node):
            path, mtype = _parse_hierarchy(node)  # GELU's erf form (gelu_graph); the run decides the site
            sites.append((GraphSite("erf", path, mtype, True), [node]))
            continue
        if kind == "aten::div" and _ts_is_softsign(node):
            path, mtype = _parse_hierarchy(node)
            sites.append((GraphSite("softsign", path, mtype, optional, producer=_ts_producer(node)), [node]))
            continue
        if kind.startswith("aten::"):
            op = kind.split("::", 1)[1]
            if canon(op) in CANON_CANDIDATES:
                path, mtype = _parse_hierarchy(node)
                sites.append((GraphSite(op, path, mtype, optional, producer=_ts_producer(node)), [node]))
            continue
        branches = [_block_sites(b, optional=True, recurrent=recurrent) for b in node.blocks()]
        if kind == "prim::If" and len(branches) == 2:
            a, b = ([(canon(g.op), g.module) for g, _ in br] for br in branches)
            if a == b:
                # F.relu(x, inplace) compiles to `if inplace: relu_ else: relu`: one site either way.
                sites.extend(
                    (GraphSite(g.op, g.module, g.module_type, optional, g.gate, g.producer), [*na, *nb])
                    for (g, na), (_, nb) in zip(branches[0], branches[1], strict=True)
                )
                continue
        for br in branches:
            sites.extend(br)
    return sites


def _ts_producer(node: torch._C.Node) -> str:
    """Module path of the node that computed ``node``'s first input (a scripted module's call of
    its own method, such as ``Conv2d._conv_forward``, adds a ``SELF`` scope: not a module)."""
    try:
        producer = node.inputsAt(0).node()
        while producer.kind() in _UNPACK:  # ``out, _ = self.lstm(x)``: the op that made the tuple
            producer = producer.inputsAt(0).node()
        path, mtype = _parse_hierarchy(producer)
    except Exception:
        return ""
    if mtype in ACTIVATION_MODULES:  # an activation module's output is another site's
        return ""
    # The module whose parameter the producer reads names it exactly: the hierarchy drops container
    # names of unrolled loops (``0`` for ``c.0``), which _full_path cannot always restore.
    path = ".".join(p for p in path.split(".") if p != "SELF")
    owner = next((p for p in map(_ts_attr_path, producer.inputs()) if p), "")
    parent = owner.rpartition(".")[0]
    if parent and path and path.split(".")[-1] == parent.split(".")[-1]:
        return parent
    return path


_UNPACK = frozenset(["prim::TupleUnpack", "prim::TupleIndex", "prim::ListUnpack", "aten::__getitem__"])


def _ts_attr_path(v: torch._C.Value) -> str:
    """``c.0.weight`` for a value read by a chain of prim::GetAttr from the module itself."""
    parts = []
    node = v.node()
    while node.kind() == "prim::GetAttr":
        parts.append(node.s("name"))
        node = node.inputsAt(0).node()
    return ".".join(reversed(parts)) if parts and node.kind() == "prim::Param" else ""


def _fx_producer(node: Any) -> str:
    """Module path of the torch.export node that computed ``node``'s first input."""
    x = node.args[0] if node.args else None
    stack = list((getattr(x, "meta", {}).get("nn_module_stack") or {}).values())
    if not stack or str(stack[-1][1]).rsplit(".", 1)[-1] in ACTIVATION_MODULES:
        return ""  # no module, or an activation module (its output is another site's)
    return re.sub(r"@\d+$", "", str(stack[-1][0]))


def _ts_is_softsign(div: torch._C.Node) -> bool:
    """``x / (1 + |x|)`` in a TorchScript graph."""
    try:
        x, den = list(div.inputs())[:2]
        add = den.node()
        if add.kind() != "aten::add":
            return False
        a, one = list(add.inputs())[:2]
        ab = a.node()
        return bool(ab.kind() == "aten::abs" and next(ab.inputs()) is x and one.toIValue() == 1)
    except Exception:
        return False


def _fx_is_softsign(node: Any) -> bool:
    """``x / (1 + |x|)`` in a torch.export graph."""
    if op_name(node.target) != "div" or len(node.args) != 2:
        return False
    x, den = node.args
    if getattr(den, "op", None) != "call_function" or op_name(den.target) != "add" or len(den.args) < 2:
        return False
    a, one = den.args[:2]
    return bool(
        getattr(a, "op", None) == "call_function"
        and op_name(a.target) == "abs"
        and a.args[0] is x
        and one == 1
    )


def _parse_hierarchy(node: torch._C.Node) -> tuple[str, str]:
    try:
        text = node.getModuleHierarchy()
    except Exception:  # older torch: no hierarchy on nodes
        return "", ""
    parts = [(n, t) for n, t in _HIER_RE.findall(text) if n and n != "UNKNOWN_INSTANCE"]
    if not parts:
        return "", ""
    return ".".join(n for n, _ in parts), parts[-1][1]


def export_site_nodes(gm: torch.fx.GraphModule) -> list[tuple[GraphSite, torch.fx.Node]]:
    """Activation-candidate nodes of a torch.export graph with their sites, in graph order."""
    out = []
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        op = "softsign" if _fx_is_softsign(node) else op_name(node.target)
        if canon(op) not in CANON_CANDIDATES:
            continue
        stack = list((node.meta.get("nn_module_stack") or {}).values())
        if stack:
            path, type_str = stack[-1]
            path = re.sub(r"@\d+$", "", str(path))
            mtype = str(type_str).rsplit(".", 1)[-1]
        else:
            path, mtype = "", ""
        out.append((GraphSite(op, path, mtype, producer=_fx_producer(node)), node))
    return out


def export_graph_sites(gm: torch.fx.GraphModule) -> list[GraphSite]:
    by_node = {id(node): site for site, node in export_site_nodes(gm)}
    out: list[GraphSite] = []
    for node in gm.graph.nodes:
        if id(node) in by_node:
            out.append(by_node[id(node)])
            continue
        op = op_name(node.target) if node.op == "call_function" else ""
        erf = op == "erf" and fx_erf_gelu(node)
        if op in _CELL_OPS or op in _FUSED_RNN or op == "glu" or erf or (op and hidden_reason(op)):
            stack = list((node.meta.get("nn_module_stack") or {}).values())
            path, mtype = (
                (re.sub(r"@\d+$", "", str(stack[-1][0])), str(stack[-1][1]).rsplit(".", 1)[-1])
                if stack
                else ("", "")
            )
            if erf:  # GELU's erf form (gelu_graph); the run decides the site
                out.append(GraphSite(op, path, mtype, True))
            elif op == "glu":
                out.append(GraphSite(op, path, mtype))
            elif op in _CELL_OPS or op in _FUSED_RNN:
                out.extend(_recurrent_sites(op, path, mtype, False))
            else:
                out.append(GraphSite(op, path, mtype, True, HIDDEN))
    return out


def relu_named(g: GraphSite, as_relu: bool) -> str:
    """A rewritten site keeps the name it had as a ReLU (functional sites are named after their op)."""
    if as_relu and canon(g.op) in ("leaky_relu", "prelu"):
        return GraphSite("relu", g.module, g.module_type).base_name
    return g.base_name


def relu_derived(g: GraphSite, as_relu: bool) -> str | None:
    """:attr:`GraphSite.derived_name` of a rewritten site as it was named as a ReLU."""
    if as_relu and canon(g.op) in ("leaky_relu", "prelu"):
        return GraphSite("relu", g.module, g.module_type, producer=g.producer).derived_name
    return g.derived_name
