"""Recycling dead units of a TorchScript module (:mod:`actaudit.edit.recycle`), in its parameters.

On the inlined ``forward`` graph, the producer is the ``aten::linear`` / ``aten::conv*`` node
that feeds the site's ``aten::relu`` (read by nothing else), with weight and bias read through
``prim::GetAttr`` chains (the module's own parameters, edited in place); the consumer is found
with the fold's walker. A compiled module has no hooks: the new rows' ``w·x`` is sampled with a
dispatch mode, as the ops that read the producer's weight storage and return a new tensor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import NotRequired, TypedDict, cast

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ...data import Batch
from ...edit import fold
from ...edit import recycle as rc
from .folding import array_of
from .script_surgery import _TS_CONV, torchscript_sites, ts_attr, ts_link

Batches = Callable[[], Iterator[Batch]]


class Job(TypedDict):
    """One site to recycle in a compiled graph: its producer's tensors, the fold, the samples taken."""

    plan: rc.RecyclePlan
    producer: str  # module path (or op) of the producing linear/conv
    w: torch.Tensor
    b: torch.Tensor
    folded: fold.Folded
    linear: bool
    live: list[int]  # the units that stay
    units: NotRequired[int]  # TorchScript: the unit count a kept op result must have
    node: NotRequired[str]  # torch.export: the producing node's name
    sample: NotRequired[rc.Reservoir]
    live_sample: NotRequired[rc.Reservoir]
    scale: NotRequired[float]


def recycle_script(
    m: torch.jit.ScriptModule,
    plans: list[tuple[rc.RecyclePlan, int, int, tuple[int, ...]]],
    seed: int,
    batches: Batches,
) -> tuple[dict[str, rc.Recycled], dict[str, str]]:
    """Recycle in ``m``'s parameters (edited in place); ``batches()`` yields the calibration (args, kwargs)."""
    rng = np.random.default_rng(seed)
    graph = cast("torch._C.ScriptMethod", m.forward).graph.copy()
    torch._C._jit_pass_inline(graph)
    sites = torchscript_sites(graph, m, formers=True)
    refused: dict[str, str] = {}
    jobs: list[Job] = []
    for plan, units, axis, sample_shape in plans:
        found = sites.get(plan.name)
        job = (
            _prepare(m, found[1][0], plan, units, axis, sample_shape)
            if found is not None and len(found[1]) == 1
            else "the site is not one aten::relu node of the inlined graph"
        )
        if isinstance(job, str):
            refused[plan.name] = job
        else:
            jobs.append(job)
    if not jobs:
        return {}, refused
    zero_and_redraw(jobs, rng)
    _sample(m, jobs, batches, rng)
    return {j["plan"].name: place(j, j["folded"].consumer.label.removesuffix(" bias")) for j in jobs}, refused


def zero_and_redraw(jobs: list[Job], rng: np.random.Generator) -> None:
    """Zero every consumer's inputs first (a consumer may be another site's producer), then redraw the rows."""
    for j in jobs:
        c = j["folded"].consumer
        assert c.write_weight is not None  # _prepare refused a consumer without one
        c.write_weight(
            rc.zero_inputs(c.kind, c.weight, j["plan"].units, repeat=j["folded"].repeat, groups=c.groups)
        )
    for j in jobs:
        rows, j["scale"] = rc.new_rows(array_of(j["w"]), j["plan"].units, rng)
        idx = torch.as_tensor(j["plan"].units, dtype=torch.long)
        with torch.no_grad():
            j["w"][idx] = torch.as_tensor(rows, dtype=j["w"].dtype)
            j["b"][idx] = 0


def _prepare(
    m: torch.jit.ScriptModule,
    node: torch._C.Node,
    plan: rc.RecyclePlan,
    units: int,
    axis: int,
    sample_shape: tuple[int, ...],
) -> Job | str:
    x = node.inputsAt(0)
    src = x.node()
    k = src.kind()
    if (
        k != "aten::linear"
        and k not in _TS_CONV
        and not (k == "aten::_convolution" and src.inputsAt(6).toIValue() is False)
    ):
        return f"the pre-activation comes from {k}, not directly from a linear/conv"
    if len(x.uses()) != 1:
        return f"the output of {k} is also read elsewhere"
    w, b = ts_attr(m, src.inputsAt(1)), ts_attr(m, src.inputsAt(2))
    if not isinstance(w, torch.Tensor) or not isinstance(b, torch.Tensor) or int(w.shape[0]) != units:
        return f"{k}'s weight and bias are not parameters with one row per unit"
    if axis != (len(sample_shape) if k == "aten::linear" else 1):
        return "the units of this site are not the producing op's outputs"

    def step(cur: torch._C.Value) -> tuple[fold.Link, torch._C.Value]:
        return ts_link(m, cur)

    got = fold.fold(np.zeros(units), axis, sample_shape, node.output(), step)
    if isinstance(got, fold.Refused):
        return got.reason.replace("the fold needs", "recycling needs")
    if got.consumer.write_weight is None or (got.consumer.kind == "conv" and got.consumer.groups != 1):
        return "the consumer's weight cannot be written (or it is a grouped convolution)"
    live = sorted(set(range(units)) - set(plan.units))
    path = []
    v = src.inputsAt(1)
    while v.node().kind() == "prim::GetAttr":
        path.append(v.node().s("name"))
        v = v.node().input()
    return {
        "plan": plan,
        "producer": ".".join(reversed(path[1:])) or k,
        "w": w,
        "b": b,
        "folded": got,
        "units": units,
        "linear": k == "aten::linear",
        "live": live,
    }


def _storage(t: torch.Tensor) -> int:
    return int(t.untyped_storage().data_ptr())


class _Keep(TorchDispatchMode):
    """Keeps the result of every op that reads a watched weight's storage and returns a new tensor."""

    def __init__(self, jobs: list[Job]) -> None:
        super().__init__()
        self.by_storage = {_storage(j["w"]): j for j in jobs}

    @classmethod
    def _should_skip_dynamo(cls) -> bool:  # torch's hook: this mode needs no torch._dynamo import
        return True

    def __torch_dispatch__(
        self,
        func: torch._ops.OpOverload,
        types: tuple[type, ...],
        args: tuple[object, ...] = (),
        kwargs: dict[str, object] | None = None,
    ) -> object:
        out = func(*args, **(kwargs or {}))
        if not isinstance(out, torch.Tensor) or out.dim() < 2:
            return out
        for a in args:
            j = self.by_storage.get(_storage(a)) if isinstance(a, torch.Tensor) else None
            if j is not None and _storage(out) != _storage(cast(torch.Tensor, a)):  # a tensor when j is set
                t = out.detach()
                t = t.reshape(-1, t.shape[-1]) if j["linear"] else t.movedim(1, -1).reshape(-1, t.shape[1])
                if t.shape[1] == j["units"]:
                    v = t.to("cpu", torch.float64).numpy()
                    j["sample"].add(v[:, j["plan"].units])
                    if j["live"]:
                        j["live_sample"].add(v[:, j["live"]])
                break
        return out


def _sample(m: torch.jit.ScriptModule, jobs: list[Job], batches: Batches, rng: np.random.Generator) -> None:
    for j in jobs:
        j["sample"], j["live_sample"] = (
            rc.Reservoir(len(j["plan"].units), rng),
            rc.Reservoir(len(j["live"]), rng),
        )
    with torch.no_grad():
        for args, kwargs in batches():
            with _Keep(jobs):
                m(*args, **kwargs)


def place(j: Job, consumer: str) -> rc.Recycled:
    """Scale and bias the redrawn rows from the sampled pre-activations; what the report says of the site."""
    values = j["sample"].values
    b = rc.bias_for_share(values, j["plan"].share)
    c = rc.activation_match(values, b, rc.live_activation_rms(j["live_sample"].values))
    w, bias = j["w"], j["b"]
    idx = torch.as_tensor(j["plan"].units, dtype=torch.long)
    with torch.no_grad():
        w[idx] = w[idx] * torch.as_tensor(c, dtype=w.dtype).reshape(-1, *([1] * (w.dim() - 1)))
        bias[idx] = torch.as_tensor(b * c, dtype=bias.dtype)
    fires = rc.fire_share(values * c, b * c)
    return rc.Recycled(
        j["producer"],
        consumer,
        j["scale"] * float(np.median(c)),
        list(j["plan"].units),
        [float(x) for x in fires],
        [float(x) for x in b * c],
    )
