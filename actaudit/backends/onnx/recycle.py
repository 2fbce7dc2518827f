"""Recycling dead units of an ONNX graph (:mod:`actaudit.edit.recycle`): new producer rows, zeroed consumer inputs.

The producer is the node that computes the site's pre-activation: a ``Gemm`` or ``Conv`` with
initializer weights, or ``MatMul`` + ``Add`` of a constant bias, read only by the activation.
The consumer is found with the fold's walker (the same rule as ``--shift fold``). The new rows'
``w·x`` is sampled once on the calibration data by a copy of the graph that also outputs the
pre-activation. Anything else refuses recycling at that site, with the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import helper

from ...edit import fold
from ...edit import recycle as rc
from .feeds import batches_for
from .session import session_for
from .sites import by_name, find_sites

if TYPE_CHECKING:
    from ...data import DataSource
    from .load import OnnxModel

Setter = Callable[[np.ndarray], None]
Run = Callable[[onnx.ModelProto, list[str]], Iterator[dict[str, np.ndarray]]]


@dataclass
class _Job:
    plan: rc.RecyclePlan
    x: str  # the pre-activation tensor
    label: str
    weight: np.ndarray  # rows = units (Gemm transB / Conv), else columns (MatMul, Gemm without transB)
    rows: bool
    weight_at: tuple[onnx.NodeProto, int]
    bias: np.ndarray
    bias_at: tuple[onnx.NodeProto, int]
    writable: Callable[[onnx.NodeProto, int], tuple[np.ndarray, Setter] | None]
    folded: fold.Folded
    unit_axis: int
    sample: rc.Reservoir
    live: rc.Reservoir
    live_idx: list[int]
    scale: float = 0.0


def recycle_onnx(
    m: onnx.ModelProto,
    handle: OnnxModel,
    plans: list[tuple[rc.RecyclePlan, int, int, tuple[int, ...]]],
    seed: int,
    data: tuple[DataSource, int | None],
    link: Callable[[str, int], tuple[fold.Link, str]],
    writable_in: Callable[..., tuple[np.ndarray, Setter] | None],
) -> tuple[dict[str, rc.Recycled], dict[str, str]]:
    """Recycle in ``m`` (edited in place); ``data``: the calibration source and sample cap."""
    if handle.external:
        why = "recycling reads and writes weights: not done for models with external data yet"
        return {}, {p.name: why for p, *_ in plans}
    rng = np.random.default_rng(seed)
    sites = by_name(find_sites(m.graph).sites)

    def writable(node: onnx.NodeProto, i: int) -> tuple[np.ndarray, Setter] | None:
        return writable_in(m, node, i, None, None)

    def run(probe: onnx.ModelProto, names: list[str]) -> Iterator[dict[str, np.ndarray]]:
        sess = session_for(handle, probe)
        for _, feeds in batches_for(handle, data[0], data[1]):
            yield dict(zip(names, sess.run(names, feeds), strict=True))

    refused: dict[str, str] = {}
    jobs: list[_Job] = []
    for plan, units, axis, sample_shape in plans:
        site = sites.get(plan.name)
        if site is None or site.scope.graph is not m.graph:
            refused[plan.name] = "the site is not in the main graph"
            continue
        job = _prepare(m, site.x, plan, units, axis, sample_shape, link, writable, rng)
        if isinstance(job, str):
            refused[plan.name] = job
        else:
            jobs.append(job)
    if not jobs:
        return {}, refused
    for j in jobs:
        c = j.folded.consumer
        assert c.write_weight is not None
        c.write_weight(
            rc.zero_inputs(c.kind, c.weight, j.plan.units, repeat=j.folded.repeat, groups=c.groups)
        )
    for j in jobs:
        _write_rows(j, rng)
    _sample(m, jobs, run)
    return {j.plan.name: _place_bias(j) for j in jobs}, refused


def _producer(m: onnx.ModelProto, x: str) -> tuple[onnx.NodeProto, onnx.NodeProto | None] | str:
    """The node computing ``x`` (and the MatMul under an Add), each read only by the next."""
    made = [n for n in m.graph.node if x in n.output]
    if len(made) != 1:
        return "its pre-activation is not computed by one node of the main graph"
    node = made[0]
    if node.op_type in ("Gemm", "Conv"):
        return node, None
    if node.op_type == "Add":
        mm = [n for n in m.graph.node if n.op_type == "MatMul" and n.output and n.output[0] in node.input]
        if len(mm) == 1 and sum(mm[0].output[0] in n.input for n in m.graph.node) == 1:
            return node, mm[0]
    return f"its pre-activation comes from {node.op_type}, not directly from a Gemm/Conv/MatMul+Add"


def _prepare(
    m: onnx.ModelProto,
    x: str,
    plan: rc.RecyclePlan,
    units: int,
    axis: int,
    sample_shape: tuple[int, ...],
    link: Callable[[str, int], tuple[fold.Link, str]],
    writable: Callable[[onnx.NodeProto, int], tuple[np.ndarray, Setter] | None],
    rng: np.random.Generator,
) -> _Job | str:
    got = _producer(m, x)
    if isinstance(got, str):
        return got
    node, mm = got
    if sum(x in n.input for n in m.graph.node) != 1 or x in {o.name for o in m.graph.output}:
        return "its pre-activation is also read elsewhere"
    if mm is not None:
        weight_at, bias_at = (mm, 1), (node, 1 if node.input[0] == mm.output[0] else 0)
        rows = False
    elif node.op_type == "Gemm":
        if any(a.name == "transA" and a.i for a in node.attribute):
            return "the producing Gemm transposes its input"
        trans_b = any(a.name == "transB" and a.i for a in node.attribute)
        weight_at, bias_at, rows = (node, 1), (node, 2), trans_b
    else:
        weight_at, bias_at, rows = (node, 1), (node, 2), True
    w, b = writable(*weight_at), writable(*bias_at)
    if w is None or b is None:
        return f"the producing {node.op_type}'s weight or bias is not an initializer of its own"
    n_out = w[0].shape[0] if rows else w[0].shape[-1]
    if (
        n_out != units
        or b[0].size != units
        or (node.op_type == "Conv") != (axis == 1 and len(sample_shape) > 1)
    ):
        return "the units of this site are not the producer's outputs"
    rank = len(sample_shape) + 1

    def step(v: str) -> tuple[fold.Link, str]:
        return link(v, rank)

    folded = fold.fold(np.zeros(units), axis, sample_shape, x_out(m, x), step)
    if isinstance(folded, fold.Refused):
        return folded.reason.replace("the fold needs", "recycling needs")
    c = folded.consumer
    if c.write_weight is None or (c.kind == "conv" and c.groups != 1):
        return "the consumer's weight cannot be written (or it is a grouped convolution)"
    live = sorted(set(range(units)) - set(plan.units))
    return _Job(
        plan,
        x,
        node.name or node.output[0],
        w[0],
        rows,
        weight_at,
        b[0].reshape(-1),
        bias_at,
        writable,
        folded,
        axis,
        rc.Reservoir(len(plan.units), rng),
        rc.Reservoir(len(live), rng),
        live,
    )


def x_out(m: onnx.ModelProto, x: str) -> str:
    """The activation's output (the fold walks from there)."""
    return next(n.output[0] for n in m.graph.node if x in n.input)


def _write_rows(j: _Job, rng: np.random.Generator) -> None:
    # Read afresh: another site's recycling may have zeroed this producer's input columns since _prepare.
    got = j.writable(*j.weight_at)
    assert got is not None
    j.weight = got[0].reshape(j.weight.shape)
    w = j.weight if j.rows else j.weight.T
    new, j.scale = rc.new_rows(w, j.plan.units, rng)
    w = rc.with_rows(w, j.plan.units, new)
    j.weight = (w if j.rows else w.T).astype(j.weight.dtype)
    _set(j, j.weight_at, j.weight)
    j.bias = j.bias.copy()
    j.bias[j.plan.units] = 0
    _set(j, j.bias_at, j.bias)


def _set(j: _Job, at: tuple[onnx.NodeProto, int], value: np.ndarray) -> None:
    """Store ``value`` at input ``at`` (a shared initializer is copied first, once: fetched afresh each time)."""
    got = j.writable(*at)
    assert got is not None
    got[1](value.reshape(got[0].shape))


def _sample(m: onnx.ModelProto, jobs: list[_Job], run: Run) -> None:
    probe = onnx.ModelProto()
    probe.CopyFrom(m)
    names = [j.x for j in jobs]
    known = {o.name for o in probe.graph.output}
    for n in names:
        if n not in known:
            probe.graph.output.append(helper.make_empty_tensor_value_info(n))
    for got in run(probe, names):
        for j in jobs:
            t = np.asarray(got[j.x], dtype=np.float64)
            t = np.moveaxis(t, j.unit_axis, -1).reshape(-1, t.shape[j.unit_axis])
            j.sample.add(t[:, j.plan.units])
            if j.live_idx:
                j.live.add(t[:, j.live_idx])


def _place_bias(j: _Job) -> rc.Recycled:
    b = rc.bias_for_share(j.sample.values, j.plan.share)
    c = rc.activation_match(j.sample.values, b, rc.live_activation_rms(j.live.values))
    w = (j.weight if j.rows else j.weight.T).astype(np.float64)
    w[j.plan.units] = w[j.plan.units] * c.reshape(-1, *([1] * (w.ndim - 1)))
    _set(j, j.weight_at, (w if j.rows else w.T).astype(j.weight.dtype))
    bias = j.bias.astype(np.float64)
    bias[j.plan.units] = b * c
    _set(j, j.bias_at, bias.astype(j.bias.dtype))
    fires = rc.fire_share(j.sample.values * c, b * c)
    return rc.Recycled(
        j.label,
        j.folded.consumer.label.rsplit(" ", 1)[0],
        j.scale * float(np.median(c)),
        list(j.plan.units),
        [float(x) for x in fires],
        [float(x) for x in b * c],
    )
