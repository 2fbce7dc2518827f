"""Recycling dead units of a ``torch.export`` program (:mod:`actaudit.edit.recycle`), in its state_dict.

The producer is the ``aten.linear`` / ``aten.conv*`` node that feeds the site's ``aten.relu``
(read by nothing else), its weight and bias parameters of the program; the consumer is found
with the fold's walker. The new rows' ``w·x`` is sampled by running the program's module under
an ``fx.Interpreter`` that keeps the producers' outputs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import fx
from torch.export import ExportedProgram
from torch.utils import _pytree as pytree

from ...data import Batch
from ...edit import fold
from ...edit import recycle as rc
from .export_surgery import export_link, export_sites
from .ops import op_name
from .recycle_script import Job, place, zero_and_redraw

_PRODUCERS = ("linear", "conv1d", "conv2d", "conv3d")
Batches = Callable[[], Iterator[Batch]]


def recycle_export(
    ep: ExportedProgram,
    plans: list[tuple[rc.RecyclePlan, int, int, tuple[int, ...]]],
    seed: int,
    batches: Batches,
) -> tuple[dict[str, rc.Recycled], dict[str, str]]:
    """Recycle in ``ep``'s parameters (edited in place); ``batches()`` yields the calibration (args, kwargs)."""
    rng = np.random.default_rng(seed)
    inputs = {s.arg.name: s.target for s in ep.graph_signature.input_specs if hasattr(s.arg, "name")}
    sites = export_sites(ep.graph_module, formers=True)
    refused: dict[str, str] = {}
    jobs: list[Job] = []
    for plan, units, axis, sample_shape in plans:
        node = sites.get(plan.name)
        job = (
            _prepare(ep, inputs, node, plan, units, axis, sample_shape)
            if node is not None
            else "the site was not found in the program's graph"
        )
        if isinstance(job, str):
            refused[plan.name] = job
        else:
            jobs.append(job)
    if not jobs:
        return {}, refused
    zero_and_redraw(jobs, rng)
    _sample(ep, jobs, batches, rng)
    return {j["plan"].name: place(j, j["folded"].consumer.label.rsplit(".", 1)[0]) for j in jobs}, refused


def _prepare(
    ep: ExportedProgram,
    inputs: dict[str, str],
    node: fx.Node,
    plan: rc.RecyclePlan,
    units: int,
    axis: int,
    sample_shape: tuple[int, ...],
) -> Job | str:
    src = node.args[0] if node.args else None
    if not isinstance(src, fx.Node) or src.op != "call_function" or op_name(src.target) not in _PRODUCERS:
        what = op_name(src.target) if isinstance(src, fx.Node) and src.op == "call_function" else "an input"
        return f"the pre-activation comes from aten.{what}, not directly from a linear/conv"
    if len(src.users) != 1 or len(src.args) < 3:
        return "the producing op's output is also read elsewhere, or it has no bias"
    w_node, b_node = src.args[1], src.args[2]
    if not isinstance(w_node, fx.Node) or not isinstance(b_node, fx.Node):
        return "the producing op has no bias parameter"
    w, b = ep.state_dict.get(inputs.get(w_node.name, "")), ep.state_dict.get(inputs.get(b_node.name, ""))
    if not isinstance(w, torch.Tensor) or not isinstance(b, torch.Tensor) or int(w.shape[0]) != units:
        return "the producing op's weight and bias are not parameters with one row per unit"
    if axis != (len(sample_shape) if op_name(src.target) == "linear" else 1):
        return "the units of this site are not the producing op's outputs"

    def step(cur: fx.Node) -> tuple[fold.Link, fx.Node]:
        return export_link(ep, inputs, cur)

    got = fold.fold(np.zeros(units), axis, sample_shape, node, step)
    if isinstance(got, fold.Refused):
        return got.reason.replace("the fold needs", "recycling needs")
    if got.consumer.write_weight is None or (got.consumer.kind == "conv" and got.consumer.groups != 1):
        return "the consumer's weight cannot be written (or it is a grouped convolution)"
    live = sorted(set(range(units)) - set(plan.units))
    return {
        "plan": plan,
        "node": src.name,
        "producer": inputs[w_node.name].rsplit(".", 1)[0],
        "w": w,
        "b": b,
        "folded": got,
        "linear": op_name(src.target) == "linear",
        "live": live,
    }


def _sample(ep: ExportedProgram, jobs: list[Job], batches: Batches, rng: np.random.Generator) -> None:
    for j in jobs:
        j["sample"], j["live_sample"] = (
            rc.Reservoir(len(j["plan"].units), rng),
            rc.Reservoir(len(j["live"]), rng),
        )
    by_name = {j["node"]: j for j in jobs}

    class _Keep(fx.Interpreter):
        def run_node(self, n: fx.Node) -> object:
            out = super().run_node(n)
            j = by_name.get(n.name)
            if j is not None and isinstance(out, torch.Tensor):
                t = out.detach()
                t = t.reshape(-1, t.shape[-1]) if j["linear"] else t.movedim(1, -1).reshape(-1, t.shape[1])
                a = t.to("cpu", torch.float64).numpy()
                j["sample"].add(a[:, j["plan"].units])
                if j["live"]:
                    j["live_sample"].add(a[:, j["live"]])
            return out

    gm = ep.module()
    with torch.no_grad():
        for args, kwargs in batches():
            _Keep(gm).run(*pytree.tree_leaves((tuple(args), dict(kwargs))))
