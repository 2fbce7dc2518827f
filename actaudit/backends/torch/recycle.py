"""Recycling dead units of an eager model (:mod:`actaudit.edit.recycle`): new incoming rows, zeroed outgoing columns.

The whole original model is traced with ``torch.fx`` (torch's modules stay leaves) to find,
for each site, the ``nn.Linear`` / ``nn.Conv*`` that produces the pre-activation (called once,
read only by the activation) and, with the fold's walker, the single linear op that consumes
the activation. The edits go into ``model``, a copy that may already carry new slopes; module
paths are the same in both. Anything else (a batch norm between, a residual add, a concat, two
consumers) refuses recycling at that site, with the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import fx, nn

from ...edit import fold
from ...edit import recycle as rc
from .eager_surgery import eager_link, global_site_nodes, trace_whole
from .folding import array_of
from .local_trace import site_node, trace_local

_PRODUCERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass
class _Job:
    plan: rc.RecyclePlan
    producer: str
    module: nn.Module
    folded: fold.Folded
    scale: float
    sample: rc.Reservoir
    live: rc.Reservoir
    live_idx: list[int]


def recycle_eager(
    original: nn.Module,
    model: nn.Module,
    plans: list[tuple[rc.RecyclePlan, int, int, tuple[int, ...]]],
    seed: int,
    run: Callable[[nn.Module], None],
) -> tuple[dict[str, rc.Recycled], dict[str, str]]:
    """Recycle each plan's units in ``model`` (in place); ``plans`` carry (units, unit axis, sample shape).

    ``run(model)`` feeds the calibration data once: the new rows' ``w·x`` is sampled there to place
    each bias. Returns what was done per site and, per refused site, why.
    """
    refused: dict[str, str] = {}
    rng = np.random.default_rng(seed)
    jobs: list[_Job] = []
    for plan, units, axis, sample_shape, found in _site_graphs(original, model, plans):
        if isinstance(found, str):
            refused[plan.name] = found
            continue
        gm, home, prefix, node = found
        job = _prepare(gm, home, prefix, node, plan, units, axis, sample_shape, _calls(gm), rng)
        if isinstance(job, str):
            refused[plan.name] = job
        else:
            jobs.append(job)
    if not jobs:
        return {}, refused
    for j in jobs:  # every consumer from its state before any edit: a consumer may be another site's producer
        _zero_columns(j)
    for j in jobs:
        _write_rows(j, rng)
    _sample(model, jobs, run)
    return {j.plan.name: _place_bias(j) for j in jobs}, refused


def _calls(gm: fx.GraphModule) -> dict[str, int]:
    calls: dict[str, int] = {}
    for n in gm.graph.nodes:
        if n.op == "call_module":
            calls[str(n.target)] = calls.get(str(n.target), 0) + 1
    return calls


_Found = tuple[fx.GraphModule, nn.Module, str, fx.Node]


def _site_graphs(
    original: nn.Module, model: nn.Module, plans: list[tuple[rc.RecyclePlan, int, int, tuple[int, ...]]]
) -> Iterator[tuple[rc.RecyclePlan, int, int, tuple[int, ...], _Found | str]]:
    """Each plan's graph, home module in ``model``, path prefix and site node: from a trace of the whole
    model, or, when that fails, of the module that calls the site (its forward only, children as leaves)."""
    try:
        gm = trace_whole(original)
    except Exception as e:
        why = f"torch.fx cannot trace the model ({type(e).__name__}): recycling needs each unit's producer and consumer"
        for plan, *rest in plans:
            yield (plan, *rest, _local(original, model, plan.locator, why))  # type: ignore[misc]
        return
    nodes = global_site_nodes(gm, [p.locator for p, *_ in plans])
    for plan, *rest in plans:
        node = nodes.get(plan.locator)
        yield (
            plan,
            *rest,
            (gm, model, "", node) if node is not None else "the site was not found in the traced model",
        )  # type: ignore[misc]


def _local(original: nn.Module, model: nn.Module, name: str, why: str) -> _Found | str:
    """The site's calling module traced alone; ``why`` (the whole model's failure) when that fails too."""
    parent, _, child = name.rpartition(".")
    if not parent or not child.isidentifier():
        return why
    home = original.get_submodule(parent)
    uses: dict[int, int] = {}
    for _, m in original.named_modules(remove_duplicate=False):
        uses[id(m)] = uses.get(id(m), 0) + 1
    if any(uses.get(id(m), 0) != 1 for m in (home, *home.children())):
        return why  # a module called from elsewhere too: its other callers are not in the local graph
    try:
        gm = trace_local(original.get_submodule(parent))
    except Exception:
        return why
    node = site_node(gm, child)
    if node is None:
        return why
    return gm, model.get_submodule(parent), parent, node


def _prepare(
    gm: fx.GraphModule,
    model: nn.Module,
    prefix: str,
    node: fx.Node,
    plan: rc.RecyclePlan,
    units: int,
    axis: int,
    sample_shape: tuple[int, ...],
    calls: dict[str, int],
    rng: np.random.Generator,
) -> _Job | str:
    src = node.args[0] if node.args else None
    if not isinstance(src, fx.Node) or src.op != "call_module":
        what = getattr(src, "target", src)
        return f"the pre-activation comes from {getattr(what, '__name__', what)}, not directly from a Linear/Conv"
    target = str(src.target)
    mod = gm.get_submodule(target)
    if not isinstance(mod, _PRODUCERS):
        return f"the pre-activation comes from {type(mod).__name__} {target}, not directly from a Linear/Conv"
    if calls.get(target, 0) != 1 or len(src.users) != 1:
        return f"{target} is called more than once or its output is also read elsewhere"
    want_axis = 1 if not isinstance(mod, nn.Linear) else len(sample_shape)
    if axis != want_axis or int(mod.weight.shape[0]) != units:
        return f"the units of this site are not the output rows of {target}"

    def step(cur: fx.Node) -> tuple[fold.Link, fx.Node]:
        return eager_link(gm, model, cur, prefix)

    got = fold.fold(np.zeros(units), axis, sample_shape, node, step)
    if isinstance(got, fold.Refused):
        return got.reason.replace("the fold needs", "recycling needs")
    if got.consumer.write_weight is None:
        return "the consumer's weight cannot be written"
    if got.consumer.kind == "conv" and got.consumer.groups != 1:
        return "the consumer is a grouped convolution"
    live = sorted(set(range(units)) - set(plan.units))
    return _Job(
        plan,
        f"{prefix}.{target}" if prefix else target,
        model.get_submodule(target),
        got,
        0.0,
        rc.Reservoir(len(plan.units), rng),
        rc.Reservoir(len(live), rng),
        live,
    )


def _write_rows(j: _Job, rng: np.random.Generator) -> None:
    mod = j.module
    w = mod.weight
    assert isinstance(w, torch.Tensor)
    rows, j.scale = rc.new_rows(array_of(w), j.plan.units, rng)
    idx = torch.as_tensor(j.plan.units, dtype=torch.long)
    with torch.no_grad():
        w[idx] = torch.as_tensor(rows, dtype=w.dtype, device=w.device)
        if mod.bias is None:
            mod.bias = nn.Parameter(torch.zeros(w.shape[0], dtype=w.dtype, device=w.device))
        b = mod.bias
        assert isinstance(b, torch.Tensor)
        b[idx] = 0


def _zero_columns(j: _Job) -> None:
    c = j.folded.consumer
    assert c.write_weight is not None
    c.write_weight(rc.zero_inputs(c.kind, c.weight, j.plan.units, repeat=j.folded.repeat, groups=c.groups))


def _sample(model: nn.Module, jobs: list[_Job], run: Callable[[nn.Module], None]) -> None:
    """One pass over the calibration data sampling each recycled row's ``w·x`` (its bias is 0 meanwhile)."""
    handles = []
    for j in jobs:
        idx = torch.as_tensor(j.plan.units, dtype=torch.long)
        live = torch.as_tensor(j.live_idx, dtype=torch.long)
        linear = isinstance(j.module, nn.Linear)

        def hook(
            _m: nn.Module,
            _i: object,
            out: torch.Tensor,
            j: _Job = j,
            idx: torch.Tensor = idx,
            live: torch.Tensor = live,
            linear: bool = linear,
        ) -> None:
            t = out.detach()
            t = t.reshape(-1, t.shape[-1]) if linear else t.movedim(1, -1).reshape(-1, t.shape[1])
            j.sample.add(t.index_select(1, idx.to(t.device)).to("cpu", torch.float64).numpy())
            if live.numel():
                j.live.add(t.index_select(1, live.to(t.device)).to("cpu", torch.float64).numpy())

        handles.append(j.module.register_forward_hook(hook))
    try:
        run(model)
    finally:
        for h in handles:
            h.remove()


def _place_bias(j: _Job) -> rc.Recycled:
    b = rc.bias_for_share(j.sample.values, j.plan.share)
    c = rc.activation_match(j.sample.values, b, rc.live_activation_rms(j.live.values))
    bias, weight = j.module.bias, j.module.weight
    assert isinstance(bias, torch.Tensor) and isinstance(weight, torch.Tensor)
    idx = torch.as_tensor(j.plan.units, dtype=torch.long)
    factor = torch.as_tensor(c, dtype=weight.dtype).reshape(-1, *([1] * (weight.dim() - 1)))
    with torch.no_grad():
        weight[idx] = weight[idx] * factor
        bias[idx] = torch.as_tensor(b * c, dtype=bias.dtype)
    j.scale *= float(np.median(c))
    fires = rc.fire_share(j.sample.values * c, b * c)
    return rc.Recycled(
        j.producer,
        j.folded.consumer.label.removesuffix(" bias"),
        j.scale,
        list(j.plan.units),
        [float(x) for x in fires],
        [float(x) for x in b],
    )
