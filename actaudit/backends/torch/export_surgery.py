"""ReLU surgery on ``torch.export`` programs: retargeted nodes, new parameters and buffers in the signature."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch.export.graph_signature import InputKind

import numpy as np
import torch
from torch import fx, nn
from torch.export import ExportedProgram

from ...edit import fold
from ...edit.slopes import Slope, SlopePlan, SurgeryResult, assign_names, float32_up, unit_shape
from .activations import LEAKY, _any, _ints, _plan_rank
from .files import clone_export
from .folding import array_of, tensor_writer
from .graphsites import export_site_nodes, relu_derived, relu_named
from .ops import op_name

_EXPORT_RELU = {"relu", "relu_"}


def export_sites(gm: fx.GraphModule, *, as_relu: bool = False, formers: bool = False) -> dict[str, fx.Node]:
    """Site name → node on an ExportedProgram's graph (same walk as the audit); ``formers`` adds
    the former names as keys."""
    found = export_site_nodes(gm)
    items = [(relu_named(site, as_relu), node) for site, node in found]
    return dict(assign_names(items, [relu_derived(site, as_relu) for site, _ in found], formers=formers))


def rewrite_export(
    ep: ExportedProgram, plans: Iterable[SlopePlan], to: str = LEAKY, *, compensate: bool = False
) -> SurgeryResult:
    """Retarget ``aten.relu`` nodes of a copy of an ExportedProgram."""
    ep = clone_export(ep)
    res = SurgeryResult(ep)
    gm = ep.graph_module
    sites = export_sites(gm, formers=True)
    new_nodes: dict[str, fx.Node] = {}
    plans = list(plans)
    for p in plans:
        node = sites.get(p.name)
        if node is None:
            res.skipped[p.name] = "no matching aten.relu node in the exported graph"
            continue
        op = op_name(node.target)
        if p.per_unit() or p.exact_shift or p.cap is not None:
            allowed = _EXPORT_RELU6 if p.cap is not None else _EXPORT_RELU
            if op not in allowed:
                res.skipped[p.name] = (
                    f"aten.{op} is not rewritten (only relu / relu6 / hardtanh(0, 6) nodes are)"
                )
                continue
            got = _export_unit(ep, node, p, to)
            if isinstance(got, str):
                res.skipped[p.name] = got
                continue
            new_nodes[p.name] = got
            res.rewritten[p.name] = "graph nodes (slope parameter, shift buffer)"
            continue
        if op not in _EXPORT_RELU:
            res.skipped[p.name] = f"aten.{op} is not rewritten (only aten.relu / aten.relu_ nodes are)"
            continue
        x = node.args[0]
        if to == LEAKY:
            node.target = (
                torch.ops.aten.leaky_relu_.default if op == "relu_" else torch.ops.aten.leaky_relu.default
            )
            node.args = (x, float(p.alpha))
            new_nodes[p.name] = node
        else:
            why = _export_prelu(ep, node, p)
            if why:
                res.skipped[p.name] = why
                continue
            new_nodes[p.name] = node
        res.rewritten[p.name] = "graph node"
    gm.graph.lint()
    gm.recompile()
    if compensate:
        plan_by = {p.name: p for p in plans}
        for name, node in new_nodes.items():
            _fold_export(ep, node, plan_by[name], res)
    return res


_EXPORT_RELU6 = {"relu6", "relu6_", "hardtanh", "hardtanh_", "clamp", "clamp_"}


def _export_input(ep: ExportedProgram, kind: InputKind, target: str, value: torch.Tensor) -> fx.Node:
    """A new parameter or buffer placeholder in the program, at its place in the signature."""
    from torch.export.graph_signature import InputKind, InputSpec, TensorArgument

    gm = ep.graph_module
    sig = ep.graph_signature
    before = (
        (InputKind.PARAMETER,) if kind == InputKind.PARAMETER else (InputKind.PARAMETER, InputKind.BUFFER)
    )
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    insert_at = next((i for i, s in enumerate(sig.input_specs) if s.kind not in before), len(sig.input_specs))
    anchor = placeholders[insert_at] if insert_at < len(placeholders) else None
    stem = ("p_" if kind == InputKind.PARAMETER else "b_") + target.replace(".", "_")
    with (
        gm.graph.inserting_before(anchor)
        if anchor is not None
        else gm.graph.inserting_after(placeholders[-1])
    ):
        ph = gm.graph.placeholder(stem)
    ph.meta["val"] = _fake_like(node_val(placeholders), value)
    persistent = True if kind == InputKind.BUFFER else None
    sig.input_specs.insert(
        insert_at, InputSpec(kind, TensorArgument(ph.name), target=target, persistent=persistent)
    )
    ep.state_dict[target] = value
    return ph


def node_val(nodes: list[fx.Node]) -> torch.Tensor | None:
    for n in nodes:
        v = n.meta.get("val")
        if isinstance(v, torch.Tensor):
            return v
    return None


def _fake_like(example: torch.Tensor | None, value: torch.Tensor) -> torch.Tensor:
    mode = getattr(example, "fake_mode", None)
    if mode is None:
        return value.detach()
    return mode.from_tensor(value.detach())


def _export_unit(ep: ExportedProgram, node: fx.Node, p: SlopePlan, to: str) -> str | fx.Node:
    """relu/relu6 node → [transpose] prelu [transpose] [clamp_max 6] sub(shift), in place of the node."""
    from torch.export.graph_signature import InputKind

    gm = ep.graph_module
    g = gm.graph
    rank = _plan_rank(p)
    axis = p.unit_axis if p.unit_axis >= 0 else rank + p.unit_axis
    stem = re.sub(r"[^0-9A-Za-z_]", "_", p.name)
    aten = torch.ops.aten
    val = node.meta.get("val")
    mode = getattr(val, "fake_mode", None)
    users = list(node.users)
    x = node.args[0]
    if to == LEAKY:
        slopes = float32_up(np.array([p.alpha]))
    else:
        slopes = float32_up(p.slopes() if p.unit_slopes is not None else p.slopes(p.alpha))
    shift_vec = p.shift_for(slopes)
    steps: list[tuple[Callable[..., torch.Tensor], tuple[object, ...]]] = []
    if to == LEAKY:
        steps.append((aten.leaky_relu.default, (float(slopes[0]),)))
    else:
        w = nn.Parameter(torch.as_tensor(slopes, dtype=torch.float32))
        ph_w = _export_input(ep, InputKind.PARAMETER, f"actaudit_slope.{stem}", w)
        moved = axis != 1 and p.units > 1
        if moved:
            steps.append((aten.transpose.int, (1, axis)))
        steps.append((aten.prelu.default, (ph_w,)))
        if moved:
            steps.append((aten.transpose.int, (1, axis)))
    if p.cap is not None:
        steps.append((aten.clamp_max.default, (float(p.cap),)))
    if p.exact_shift:
        sh = torch.as_tensor(
            shift_vec.reshape(unit_shape(p.units, axis, rank) if p.units > 1 else [1]), dtype=torch.float32
        )
        ph_s = _export_input(ep, InputKind.BUFFER, f"actaudit_shift.{stem}", sh)
        steps.append((aten.sub.Tensor, (ph_s,)))
    cur: Any = x
    made: list[fx.Node] = []
    anchor = node
    for target, extra in steps:
        with g.inserting_after(anchor):
            new = g.call_function(target, (cur, *extra))
        new.meta.update({k: v for k, v in node.meta.items() if k not in ("val", "tensor_meta")})
        try:
            args = [a.meta["val"] if isinstance(a, fx.Node) else a for a in (cur, *extra)]
            if mode is not None:
                with mode:
                    new.meta["val"] = target(*args)
            else:
                new.meta["val"] = target(*args)
        except Exception as e:
            for m in reversed([*made, new]):
                g.erase_node(m)
            return f"could not build the rewritten nodes ({type(e).__name__}: {e})"
        made.append(new)
        anchor, cur = new, new
    for u in users:
        u.replace_input_with(node, cur)
    for spec in ep.graph_signature.output_specs:  # the site may be a program output
        if getattr(spec.arg, "name", None) == node.name:
            spec.arg.name = cur.name
    g.erase_node(node)
    return cur


def _export_prelu(ep: ExportedProgram, node: fx.Node, p: SlopePlan) -> str | None:
    from torch.export.graph_signature import InputKind, InputSpec, TensorArgument

    if p.unit_axis != 1 and p.units != 1:
        return f"PReLU on unit axis {p.unit_axis}: aten.prelu scales axis 1 only; use --to leaky"
    gm = ep.graph_module
    sig = ep.graph_signature
    target = f"actaudit_prelu.{re.sub(r'[^0-9A-Za-z_]', '_', p.name)}"
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    user_inputs = set(sig.user_inputs)
    first_user = next((n for n in placeholders if n.name in user_inputs), None)
    insert_at = next(
        (i for i, s in enumerate(sig.input_specs) if s.kind == InputKind.USER_INPUT), len(sig.input_specs)
    )
    # Parameters come before buffers and constants in an export signature.
    insert_at = next(
        (i for i, s in enumerate(sig.input_specs) if s.kind != InputKind.PARAMETER), len(sig.input_specs)
    )
    anchor = placeholders[insert_at] if insert_at < len(placeholders) else first_user
    ph_name = "p_" + target.replace(".", "_")
    with (
        gm.graph.inserting_before(anchor)
        if anchor is not None
        else gm.graph.inserting_after(placeholders[-1])
    ):
        ph = gm.graph.placeholder(ph_name)
    weight = nn.Parameter(torch.as_tensor(p.slopes(), dtype=torch.float32))
    ph.meta["val"] = weight.detach()
    sig.input_specs.insert(
        insert_at, InputSpec(InputKind.PARAMETER, TensorArgument(ph.name), target=target, persistent=None)
    )
    ep.state_dict[target] = weight
    node.target = torch.ops.aten.prelu.default
    node.args = (node.args[0], ph)
    return None


def _fold_export(ep: ExportedProgram, node: fx.Node, p: SlopePlan, res: SurgeryResult) -> None:
    if p.neg_mean is None:
        return
    inputs = {s.arg.name: s.target for s in ep.graph_signature.input_specs if hasattr(s.arg, "name")}

    def step(cur: fx.Node) -> tuple[fold.Link, fx.Node]:
        return export_link(ep, inputs, cur)

    fold.settle(res, p.name, fold.fold(p.shift(), p.unit_axis, p.sample_shape, node, step))


_EXPORT_PASS = {"dropout", "contiguous", "clone", "alias"}
_EXPORT_POOLS = {"adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d"}


def export_link(ep: ExportedProgram, inputs: dict[str, str], cur: fx.Node) -> tuple[fold.Link, fx.Node]:
    """The one node of a program's graph that reads ``cur``, in the fold's terms."""
    users = list(cur.users)
    if len(users) != 1:
        return fold.Fanout(len(users)), cur
    u = users[0]
    op = op_name(u.target) if u.op == "call_function" else u.op
    if not u.args or u.args[0] is not cur:
        return fold.Other(op), u
    if op in _EXPORT_PASS:
        return fold.Pass(), u
    if op in _EXPORT_POOLS:
        return fold.Pool(op, all(int(x) == 1 for x in _ints(u.args[1]))), u
    if op == "flatten":
        start, end = (u.args[1] if len(u.args) > 1 else 0), (u.args[2] if len(u.args) > 2 else -1)
        return fold.Flatten(op, bool(start == 1 and end == -1)), u
    if op in ("view", "reshape") and len(u.args) > 1:
        return fold.Reshape(op, tuple(d if isinstance(d, int) else None for d in _ints(u.args[1]))), u
    if op in ("conv1d", "conv2d", "conv3d", "linear"):
        return _export_consumer(ep, inputs, u, op), u
    return fold.Other(op), u


def _export_consumer(ep: ExportedProgram, inputs: dict[str, str], u: fx.Node, op: str) -> fold.Link:
    w_node = u.args[1]
    b_node = u.args[2] if len(u.args) > 2 else None
    if not isinstance(b_node, fx.Node) or b_node.name not in inputs or not isinstance(w_node, fx.Node):
        return fold.Stop(f"the next op aten.{op} has no bias parameter to fold into")
    weight = ep.state_dict.get(inputs.get(w_node.name))
    bias = ep.state_dict.get(inputs[b_node.name])
    if weight is None or bias is None:
        return fold.Stop(f"the next op aten.{op} takes its weights from a non-parameter")
    w, b, write, label = array_of(weight), array_of(bias), tensor_writer(bias), inputs[b_node.name]
    if op == "linear":
        return fold.Consumer(label, "linear", w, b, write, write_weight=tensor_writer(weight))
    groups = int(_any(u.args[6])) if len(u.args) > 6 else 1
    padding: fx.node.Argument = u.args[4] if len(u.args) > 4 else 0
    padded = padding == "same" or any(int(x) for x in _ints(padding)) if padding != "valid" else False
    return fold.Consumer(label, "conv", w, b, write, groups, padded, write_weight=tensor_writer(weight))


def export_slopes(ep: ExportedProgram) -> list[tuple[str, str, object]]:
    """(site, op, slope) for every rectifier node of an ExportedProgram; PReLU slopes as lists."""
    inputs = {s.arg.name: s.target for s in ep.graph_signature.input_specs if hasattr(s.arg, "name")}
    out: list[tuple[str, str, object]] = []
    for name, node in export_sites(ep.graph_module, as_relu=True).items():
        op = op_name(node.target)
        slope: Slope = None
        if op.startswith("leaky_relu"):
            slope = float(_any(node.args[1])) if len(node.args) > 1 else 0.01
        elif op in ("prelu", "_prelu_kernel") and isinstance(node.args[1], fx.Node):
            w, lo, hi = node.args[1], -math.inf, math.inf
            if op_name(w.target) == "clamp" and isinstance(w.args[0], fx.Node):  # a bounded learnable slope
                lo = float(_any(w.args[1])) if len(w.args) > 1 and w.args[1] is not None else lo
                hi = float(_any(w.args[2])) if len(w.args) > 2 and w.args[2] is not None else hi
                w = w.args[0]
            t = ep.state_dict.get(inputs.get(w.name))
            slope = None if t is None else [min(max(float(x), lo), hi) for x in t.detach().flatten()]
        out.append((name, op, slope))
    return out
