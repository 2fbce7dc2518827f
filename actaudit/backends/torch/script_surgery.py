"""ReLU surgery on TorchScript: node-level edits on the inlined ``forward`` graph (parameters stay parameters)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, cast

import numpy as np
import torch

from ...edit import fold
from ...edit.slopes import Slope, SlopePlan, SurgeryResult, assign_names, float32_up, unit_shape
from .activations import LEAKY, PRELU, _plan_rank
from .files import clone_script
from .folding import array_of, tensor_writer
from .graphsites import canon, relu_derived, relu_named, torchscript_site_nodes


def torchscript_sites(
    graph: torch._C.Graph, module: torch.jit.ScriptModule, *, as_relu: bool = False, formers: bool = False
) -> dict[str, tuple[str, list[torch._C.Node]]]:
    """Site name → (op, nodes) on an inlined TorchScript graph (the audit's own walk);
    ``as_relu`` names rewritten sites as before; ``formers`` adds the former names as keys."""
    sites = torchscript_site_nodes(graph, module)
    named = assign_names(
        [(relu_named(g, as_relu), (g, nodes)) for g, nodes in sites],
        [relu_derived(g, as_relu) for g, _ in sites],
        formers=formers,
    )
    return {name: (g.op, nodes) for name, (g, nodes) in named}


def rewrite_torchscript(
    module: torch.jit.ScriptModule, plans: Iterable[SlopePlan], to: str = LEAKY, *, compensate: bool = False
) -> SurgeryResult:
    """Edit a copy of a ScriptModule's inlined ``forward`` graph, node by node."""
    m = clone_script(module)
    res = SurgeryResult(m)
    graph = m.graph
    torch._C._jit_pass_inline(graph)
    sites = torchscript_sites(graph, m, formers=True)
    new_nodes: dict[str, torch._C.Node] = {}
    for p in plans:
        found = sites.get(p.name)
        if found is None:
            res.skipped[p.name] = "no matching aten::relu node in the inlined TorchScript graph"
            continue
        op, nodes = found
        if p.per_unit() or p.exact_shift or p.cap is not None:
            if op not in (_TS_RELU6 if p.cap is not None else ("relu", "relu_")):
                res.skipped[p.name] = (
                    f"aten::{op} is not rewritten (only relu / relu6 / hardtanh(0, 6) nodes are)"
                )
                continue
            for node in nodes:
                new_nodes[p.name] = _ts_unit(graph, node, p, to)
            res.rewritten[p.name] = "graph nodes (slopes and shifts as tensor constants)"
            note = (
                "TorchScript: per-unit slopes and shifts are tensor constants of the graph (a compiled module cannot "
                "gain parameters): they reload and pass gradients to the layers before them, but do not train themselves"
            )
            if to != LEAKY and note not in res.notes:
                res.notes.append(note)
            continue
        if canon(op) != "relu" or op not in ("relu", "relu_"):
            res.skipped[p.name] = f"aten::{op} is not rewritten (only aten::relu / aten::relu_ nodes are)"
            continue
        if to == PRELU:
            res.skipped[p.name] = (
                "TorchScript cannot add a parameter to a compiled module, so a learnable PReLU slope is impossible here; "
                "use --to leaky, or rewrite the eager model"
            )
            continue
        for node in nodes:
            new_nodes[p.name] = _ts_leaky(graph, node, p.alpha)
        res.rewritten[p.name] = "graph node"
    torch._C._jit_pass_lint(graph)
    if compensate:
        plan_by = {p.name: p for p in plans}
        for name, node in new_nodes.items():
            _fold_ts(m, node, plan_by[name], res)
    return res


_TS_RELU6 = ("relu6", "relu6_", "hardtanh", "hardtanh_", "clamp", "clamp_")


# torch._C's stubs lack Graph.insertConstant and create's default output count, and type
# Value.toIValue as an empty IValue class: graphs that are edited, and constants read, stay Any.
def _ts_unit(graph: Any, node: torch._C.Node, p: SlopePlan, to: str) -> torch._C.Node:
    """Replace one relu/relu6 node by prelu (or leaky_relu), clamp_max for ReLU6, and the shift.

    TorchScript cannot add parameters to a compiled module: slopes and shifts are tensor
    constants of the graph (they reload and run anywhere, but do not train as parameters).
    """
    rank = _plan_rank(p)
    axis = p.unit_axis if p.unit_axis >= 0 else rank + p.unit_axis
    if to == LEAKY:
        slopes = float32_up(np.array([p.alpha]))
    else:
        slopes = float32_up(p.slopes() if p.unit_slopes is not None else p.slopes(p.alpha))
    shift = p.shift_for(slopes)
    out_type = node.output().type()

    def make(kind: str, inputs: list[torch._C.Value]) -> torch._C.Value:
        n = graph.create(kind, inputs)
        n.insertBefore(node)
        n.output().setType(out_type)
        n.copyMetadata(node)
        return n.output()

    with graph.insert_point_guard(node):
        x = (
            node.input()
            if node.kind() not in ("aten::hardtanh", "aten::hardtanh_", "aten::clamp", "aten::clamp_")
            else node.inputsAt(0)
        )
        if to == LEAKY:
            y = make("aten::leaky_relu", [x, graph.insertConstant(float(slopes[0]))])
        else:
            moved = axis != 1 and p.units > 1
            ax1, axu = graph.insertConstant(1), graph.insertConstant(int(axis))
            if moved:
                x = make("aten::movedim", [x, axu, ax1])
            w = graph.insertConstant(torch.as_tensor(slopes, dtype=torch.float32).to(_graph_device(node)))
            y = make("aten::prelu", [x, w])
            if moved:
                y = make("aten::movedim", [y, ax1, axu])
        if p.cap is not None:
            y = make("aten::clamp_max", [y, graph.insertConstant(float(p.cap))])
        if p.exact_shift:
            sh = torch.as_tensor(
                shift.reshape(unit_shape(p.units, axis, rank) if p.units > 1 else [1]), dtype=torch.float32
            )
            y = make(
                "aten::sub", [y, graph.insertConstant(sh.to(_graph_device(node))), graph.insertConstant(1)]
            )
    node.output().replaceAllUsesWith(y)
    node.destroy()
    return y.node()


def _graph_device(node: torch._C.Node) -> torch.device:
    t = node.output().type()
    dev = t.device() if hasattr(t, "device") else None
    return dev if dev is not None else torch.device("cpu")


def _ts_leaky(graph: Any, node: torch._C.Node, alpha: float) -> torch._C.Node:
    inplace = node.kind() == "aten::relu_"
    with graph.insert_point_guard(node):
        const = graph.insertConstant(float(alpha))
        new = graph.create("aten::leaky_relu_" if inplace else "aten::leaky_relu", [node.input(), const])
        new.insertBefore(node)
        new.output().setType(node.output().type())
        new.copyMetadata(node)
    node.output().replaceAllUsesWith(new.output())
    node.destroy()
    return new


_TS_TRANSPARENT = {"aten::dropout", "aten::contiguous", "aten::feature_dropout"}
_TS_CONV = {"aten::conv1d", "aten::conv2d", "aten::conv3d"}
_TS_POOLS = {"aten::adaptive_avg_pool1d", "aten::adaptive_avg_pool2d", "aten::adaptive_avg_pool3d"}
_TS_SHAPE_ONLY = {"aten::size", "aten::dim", "aten::len", "prim::device", "prim::dtype", "prim::shape"}


def ts_attr(m: torch.jit.ScriptModule, value: torch._C.Value) -> object:
    """Follow a prim::GetAttr chain back to the module itself (``forward``'s first input, whatever
    its name) and return the Python-side object."""
    names = []
    v = value
    while v.node().kind() == "prim::GetAttr":
        names.append(v.node().s("name"))
        v = v.node().input()
    if v.node().kind() != "prim::Param" or v.offset() != 0:
        return None
    obj = m
    for n in reversed(names):
        obj = getattr(obj, n)
    return obj


def _fold_ts(m: torch.jit.ScriptModule, node: torch._C.Node, p: SlopePlan, res: SurgeryResult) -> None:
    if p.neg_mean is None:
        return

    def step(cur: torch._C.Value) -> tuple[fold.Link, torch._C.Value]:
        return ts_link(m, cur)

    fold.settle(res, p.name, fold.fold(p.shift(), p.unit_axis, p.sample_shape, node.output(), step))


def ts_link(m: torch.jit.ScriptModule, cur: torch._C.Value) -> tuple[fold.Link, torch._C.Value]:
    """The one node of an inlined graph that reads value ``cur``, in the fold's terms, and its output."""
    uses = [x for x in cur.uses() if x.user.kind() not in _TS_SHAPE_ONLY]
    if len(uses) != 1:
        return fold.Fanout(len(uses)), cur
    u, first = uses[0].user, uses[0].offset == 0
    k = u.kind()
    if k == "prim::Return" and u.owningBlock().owningNode() is not None:
        owner = u.owningBlock().owningNode()
        if owner.kind() != "prim::If":
            return fold.Stop(f"the site is inside a {owner.kind()} body"), cur
        return fold.Pass(), owner.outputsAt(uses[0].offset)  # F.relu's `if inplace:` branches meet here
    if k in _TS_TRANSPARENT and first:
        return fold.Pass(), u.output()
    if k in _TS_POOLS and first:
        size = _ts_list(u.inputsAt(1))
        return fold.Pool(k, size is not None and all(int(x) == 1 for x in size)), u.output()
    if k == "aten::flatten" and first:
        dims = [_ts_const(u.inputsAt(i)) for i in (1, 2)]
        return fold.Flatten(k, dims == [1, -1]), u.output()
    if k in ("aten::view", "aten::reshape") and first:
        return fold.Reshape(k, _ts_dims(u.inputsAt(1))), u.output()
    if (k in _TS_CONV or k == "aten::linear") and first:
        return _ts_consumer(m, u, k), u.output()
    if k == "aten::_convolution" and first:  # what torch.jit.trace records for a conv
        if _ts_const(u.inputsAt(6)) is not False:
            return fold.Other("a transposed convolution"), u.output()
        return _ts_consumer(m, u, k), u.output()
    return fold.Other(k), u.output()


def _ts_consumer(m: torch.jit.ScriptModule, u: torch._C.Node, k: str) -> fold.Link:
    weight = ts_attr(m, u.inputsAt(1))
    bias = ts_attr(m, u.inputsAt(2)) if u.inputsAt(2).node().kind() == "prim::GetAttr" else None
    if not isinstance(weight, torch.Tensor) or not isinstance(bias, torch.Tensor):
        return fold.Stop(f"the next op {k} has no bias parameter to fold into")
    w, b, write, ww = array_of(weight), array_of(bias), tensor_writer(bias), tensor_writer(weight)
    label = _ts_path(u.inputsAt(1)) or k
    if k == "aten::linear":
        return fold.Consumer(f"{label} bias", "linear", w, b, write, write_weight=ww)
    groups = _ts_const(u.inputsAt(8 if k == "aten::_convolution" else 6))
    if not isinstance(groups, int):
        return fold.Stop("the next conv has a non-constant group count")
    padded = _ts_padded(u.inputsAt(4).node())
    return fold.Consumer(f"{label} bias", "conv", w, b, write, groups, padded, write_weight=ww)


def _ts_path(value: torch._C.Value) -> str:
    """The module path of a parameter read through a prim::GetAttr chain (``fc2`` for ``fc2.weight``)."""
    names = []
    v = value
    while v.node().kind() == "prim::GetAttr":
        names.append(v.node().s("name"))
        v = v.node().input()
    return ".".join(reversed(names[1:]))


def _ts_const(v: torch._C.Value) -> object:
    return v.toIValue() if v.node().kind() == "prim::Constant" else None


def _ts_dims(v: torch._C.Value) -> tuple[int | None, ...] | None:
    """A size list: constants as ints, other entries (``x.size(0)``) as None."""
    n = v.node()
    if n.kind() == "prim::ListConstruct":
        return tuple(c if isinstance(c := _ts_const(i), int) else None for i in n.inputs())
    got = _ts_list(v)
    return None if got is None else tuple(got)


def _ts_list(v: Any) -> list[int] | None:
    n = v.node()
    if n.kind() == "prim::Constant":
        val = v.toIValue()
        return [int(x) for x in val] if isinstance(val, (list, tuple)) else [int(val)]
    if n.kind() == "prim::ListConstruct":
        out = []
        for i in n.inputs():
            if i.node().kind() != "prim::Constant":
                return None
            out.append(int(i.toIValue()))
        return out
    return None


def _ts_padded(pad_node: Any) -> bool:
    if pad_node.kind() == "prim::ListConstruct":
        vals = []
        for v in pad_node.inputs():
            if v.node().kind() != "prim::Constant":
                return True
            vals.append(v.toIValue())
        return any(int(x) for x in vals)
    if pad_node.kind() == "prim::Constant":
        v = pad_node.output().toIValue()
        return v != "valid" and (not isinstance(v, (list, tuple)) or any(int(x) for x in v))
    return True


def torchscript_slopes(module: torch.jit.ScriptModule) -> list[tuple[str, str, object]]:
    """(op, module path, slope) for every rectifier node of a saved/loaded ScriptModule's inlined graph."""
    graph = cast("torch._C.ScriptMethod", module.forward).graph.copy()
    torch._C._jit_pass_inline(graph)
    out: list[tuple[str, str, object]] = []
    for name, (op, nodes) in torchscript_sites(graph, module, as_relu=True).items():
        n: Any = nodes[0]  # its constants are read (toIValue)
        slope: Slope = None
        if op.startswith("leaky_relu"):
            v = n.inputsAt(1)
            if v.node().kind() == "prim::Constant":
                slope = float(v.toIValue())
            else:
                a = ts_attr(module, v)
                slope = float(a) if isinstance(a, float) else None
        elif canon(op) == "prelu":
            v, bounds = _through_clamp(module, n.inputsAt(1))
            if v.node().kind() == "prim::Constant":
                slope = [float(x) for x in v.toIValue().flatten()]
            else:
                w = ts_attr(module, v)
                slope = None if not isinstance(w, torch.Tensor) else [float(x) for x in w.detach().flatten()]
            if slope is not None and bounds is not None:
                slope = [min(max(x, bounds[0]), bounds[1]) for x in slope]
        out.append((name, op, slope))
    return out


def _through_clamp(module: torch.jit.ScriptModule, v: Any) -> tuple[Any, tuple[float, float] | None]:
    """A PReLU weight written as ``clamp(weight, lo, hi)`` (a bounded learnable slope): the weight and bounds."""
    node = v.node()
    if node.kind() != "aten::clamp":
        return v, None
    ends = []
    for i, default in ((1, -math.inf), (2, math.inf)):
        e = node.inputsAt(i)
        val = e.toIValue() if e.node().kind() == "prim::Constant" else ts_attr(module, e)
        if val is not None and not isinstance(val, (int, float)):
            return v, None
        ends.append(default if val is None else float(val))
    return node.inputsAt(0), (ends[0], ends[1])
