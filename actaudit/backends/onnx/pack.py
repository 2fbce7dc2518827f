"""Small sites measured together: their pre-activations concatenated along the unit axis, reduced once.

Per-site reductions cost a dozen onnxruntime nodes per site whatever the tensor's
size; on a 1,000-layer MLP of 64 features that fixed cost was ten times the model's
own. Sites of the main graph whose shape is known before run time (all but the leading
dimension), that are small (at most ``_SITE_ELEMENTS`` values per sample) and share
rank, unit axis and the other dimensions go into *packs*: ``Concat(x_1 … x_K)`` along
the unit axis, then one set of the fast reductions over ``ΣC`` units. A unit's slice of
the concatenation holds exactly its own site's values, so counts, minima and maxima are
those of the per-site reductions and sums differ only in float rounding order.

Thresholds differ per unit inside a pack, so the counts use a per-unit constant:
``x > low`` is ``Cast(bool)`` of ``Relu(x - low)`` (IEEE subtraction is zero only when the
two are equal, gradual underflow keeps the sign), which is what the per-site
``HardSigmoid`` computes with a scalar threshold. ``Concat`` fails at run time when the
leading dimensions of its inputs differ (stale static shapes): the backend then
rebuilds without packs. Sites measured from their ReLU output (``ReductionPlan.post``)
pack only with each other and concatenate those outputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ...stats import empty_vectors, fold_vectors
from . import proto as onnx
from .graph import opset_version
from .instrument import ReductionPlan, SiteOutputs, _Emitter, _Names, _nonzero, _static_axis, instrument
from .proto import TensorProto

_SITE_ELEMENTS = 1 << 14  # values per sample above which a site keeps its own reductions
_PACK_ELEMENTS = 1 << 15  # values per sample of one pack: what the concatenation keeps alive
UNITS_FIRST = True
MIN_SITES = 4  # fewer sites gain nothing over the per-site reductions

STATS = ("min", "max", "sum", "sq", "pos_sum", "pos_sq", "above_low", "below_high")


@dataclass
class Member:
    plan: int  # index into the plans
    offset: int  # first unit in the pack
    units: int


@dataclass
class Pack:
    """One concatenation and the output names of its per-unit vectors (``STATS`` and ``shape``)."""

    axis: int
    rank: int
    units: int
    members: list[Member] = field(default_factory=list)
    names: dict[str, str] = field(default_factory=dict)
    low: np.ndarray | None = None  # per unit, float32 (-inf: no threshold)
    high: np.ndarray | None = None
    post: bool = False  # members are ReLU outputs (:data:`.instrument.POST_STATS` only)


def _key(plan: ReductionPlan) -> tuple[tuple[int, ...], int, int, bool] | None:
    """(the other dimensions, unit axis, units) when the site can join a pack, else None."""
    site = plan.site
    if site.scope.owner is not None or site.elem_type != TensorProto.FLOAT:
        return None
    view = _static_axis(site, plan.axis)
    dims = site.scope.type_of(site.x)[2]
    if view is None or dims is None or view[0] == 0:
        return None
    k, _rank = view
    rest = dims[1:]
    if any(d is None or d <= 0 for d in rest):
        return None
    if math.prod(d for d in rest if d is not None) > _SITE_ELEMENTS:
        return None
    units = dims[k]
    assert units is not None
    other = tuple(-1 if i == k else int(d) for i, d in enumerate(rest, 1) if d is not None)
    return other, k, int(units), plan.post


def plan_packs(plans: list[ReductionPlan]) -> list[Pack]:
    """Packs of at least ``MIN_SITES`` sites, in graph order within each shape."""
    open_: dict[tuple[tuple[int, ...], int, bool], Pack] = {}
    sizes: dict[tuple[tuple[int, ...], int, bool], int] = {}
    done: list[Pack] = []
    for i, plan in enumerate(plans):
        key = _key(plan)
        if key is None:
            continue
        other, k, units, post = key
        per_sample = units * math.prod(d for d in other if d > 0)
        shape_key = (other, k, post)
        pack = open_.get(shape_key)
        if pack is not None and sizes[shape_key] + per_sample > _PACK_ELEMENTS:
            done.append(pack)
            pack = None
        if pack is None:
            pack = open_[shape_key] = Pack(axis=k, rank=len(other) + 1, units=0, post=post)
            sizes[shape_key] = 0
        pack.members.append(Member(i, pack.units, units))
        pack.units += units
        sizes[shape_key] += per_sample
    done.extend(open_.values())
    packs = [p for p in done if len(p.members) >= MIN_SITES]
    for p in packs:
        p.low = np.concatenate(
            [np.full(m.units, plans[m.plan].low, np.float32) for m in p.members]  # -inf stays -inf
        )
        p.high = np.concatenate([np.full(m.units, plans[m.plan].high, np.float32) for m in p.members])
    return packs


def emit_pack(em: _Emitter, pack: Pack, plans: list[ReductionPlan]) -> None:
    """Append the pack's concatenation and reductions to the main graph; fills ``pack.names``.

    Each site goes units-first (``Transpose``, ``[C, …]``) and the pack is viewed as
    ``[U, M]``: onnxruntime reduces a contiguous last axis several times faster than a
    leading one (``ReduceMax`` over axis 0 of ``[32, 32768]``: 4.5 ms against 0.2 ms).
    """
    k, rank, units = pack.axis, pack.rank, pack.units
    assert pack.low is not None and pack.high is not None
    inputs = [_member_tensor(plans[m.plan]) for m in pack.members]
    if pack.post and rank == 2 and k == 1:
        # [N, C_i] ReLU outputs: one Concat along the units and one Transpose of the whole pack,
        # where a Transpose per site costs more than the reductions (fixed cost per node). Not for
        # full statistics: onnxruntime moves this Transpose through the reductions of x and of
        # relu(x) differently, and their rounding must agree for the negative part (sum − pos_sum).
        cat = em.node("Concat", inputs, axis=1)
        pack.names["shape"] = em.node("Shape", [cat])
        view = em.node("Transpose", [cat], perm=[1, 0])
        stages: tuple[int, ...] = (1,)
        unit_shape = [units, 1]
    elif UNITS_FIRST:
        perm = [k, *(i for i in range(rank) if i != k)]
        xs = [em.node("Transpose", [x], perm=perm) for x in inputs]
        cat = em.node("Concat", xs, axis=0)
        shape = em.node("Shape", [cat])
        # The shape in the model's own axis order (unit axis back at k), as the per-site path reports it.
        inverse = [perm.index(i) for i in range(rank)]
        pack.names["shape"] = em.node("Gather", [shape, em.ints(*inverse)], axis=0)
        view = em.node("Reshape", [cat, em.ints(units, -1)])
        stages = (1,)
        unit_shape = [units, 1]
    else:
        cat = em.node("Concat", inputs, axis=k)
        pack.names["shape"] = em.node("Shape", [cat])
        if k == rank - 1:
            view = em.node("Reshape", [cat, em.ints(-1, units)]) if rank > 2 else cat
            stages, unit_shape = (0,), [units]
        else:
            view = em.node("Reshape", [cat, em.ints(0, units, -1)])
            stages, unit_shape = (2, 0), [units, 1]

    def per_unit(op: str, t: str) -> str:
        return em.per_unit(op, t, stages)

    n = pack.names
    n["max"] = per_unit("ReduceMax", view)
    if pack.post:  # the view is max(x, 0) already, and every member's low threshold is 0
        pos = view
    else:
        n["min"] = per_unit("ReduceMin", view)
        n["sum"] = per_unit("ReduceSum", view)
        n["sq"] = per_unit("ReduceSum", em.node("Mul", [view, view]))
        pos = em.node("Relu", [view])
    n["pos_sum"] = per_unit("ReduceSum", pos)
    n["pos_sq"] = per_unit("ReduceSum", em.node("Mul", [pos, pos]))
    if np.isfinite(pack.low).any():
        if (pack.low[np.isfinite(pack.low)] == 0).all() and not np.isneginf(pack.low).any():
            above = _nonzero(em, pos, TensorProto.FLOAT)
        else:
            low = em.const(pack.low.reshape(unit_shape))
            above = _nonzero(em, em.node("Relu", [em.node("Sub", [view, low])]), TensorProto.FLOAT)
        n["above_low"] = per_unit("ReduceSum", above)
    if np.isfinite(pack.high).any():
        high = em.const(pack.high.reshape(unit_shape))
        below = _nonzero(em, em.node("Relu", [em.node("Sub", [high, view])]), TensorProto.FLOAT)
        n["below_high"] = per_unit("ReduceSum", below)


def _member_tensor(plan: ReductionPlan) -> str:
    """What a pack concatenates of one site: its ReLU's output in post mode, else its pre-activation."""
    if plan.post:
        assert plan.site.relu_out is not None
        return plan.site.relu_out
    return plan.site.x


def instrument_packed(
    model: onnx.ModelProto, plans: list[ReductionPlan]
) -> tuple[dict[int, SiteOutputs], list[Pack]]:
    """The fast instrumentation with packs: per-site outputs for the other sites, and the packs."""
    packs = plan_packs(plans)
    fresh = _Names(model)
    skip = frozenset(m.plan for p in packs for m in p.members)
    outputs = instrument(model, plans, False, skip=skip, fresh=fresh)
    em = _Emitter(model.graph, opset_version(model), fresh)
    for p in packs:
        emit_pack(em, p, plans)
        for stat, name in p.names.items():
            elem = TensorProto.INT64 if stat == "shape" else TensorProto.FLOAT
            model.graph.output.append(onnx.make_tensor_value_info(name, elem, [None]))
    return outputs, packs


class PackAcc:
    """A pack's per-unit counters over the batches, kept as flat vectors (one numpy op per field).

    The sums are taken batch by batch in float64 in the same order as
    :meth:`actaudit.stats.SiteStats.add_batch` would, so :meth:`vectors` hands each
    member exactly the numbers the per-site path accumulates from the same batch vectors.
    """

    def __init__(self, pack: Pack) -> None:
        self.pack = pack
        u = pack.units
        self.acc: dict[str, np.ndarray] = empty_vectors(u)
        self.elements = np.zeros(len(pack.members), np.int64)
        self.samples = np.zeros(len(pack.members), np.int64)
        self.broken: str | None = None

    def per_unit_elements(self, shape: np.ndarray) -> int:
        units = int(shape[self.pack.axis])
        return math.prod(int(d) for d in shape) // max(units, 1)

    def fold(self, v: dict[str, np.ndarray], samples: int) -> str | None:
        """Fold one fast run in; returns why the pack's shape does not fit, if it does not."""
        shape = v["shape"]
        if shape.size != self.pack.rank or int(shape[self.pack.axis]) != self.pack.units:
            return f"its unit count changed between calls (packed shape {shape.tolist()})"
        elements = self.per_unit_elements(shape)
        a = self.acc
        np.maximum(a["max"], v["max"].astype(np.float64), out=a["max"])
        pos_sum, pos_sq = v["pos_sum"].astype(np.float64), v["pos_sq"].astype(np.float64)
        a["pos_sum"] += pos_sum
        a["pos_sq"] += pos_sq
        if "sum" in v:
            np.minimum(a["min"], v["min"].astype(np.float64), out=a["min"])
            a["neg_sum"] += np.minimum(v["sum"].astype(np.float64) - pos_sum, 0.0)
            a["neg_sq"] += np.maximum(v["sq"].astype(np.float64) - pos_sq, 0.0)
        else:  # a post-activation pack: not measured (NaN stays NaN through every merge)
            a["min"][:] = a["neg_sum"][:] = a["neg_sq"][:] = np.nan
        if "above_low" in v:
            a["low"] += elements - v["above_low"].astype(np.int64)
        if "below_high" in v:
            a["high"] += elements - v["below_high"].astype(np.int64)
        self.elements += elements
        self.samples += samples
        return None

    def add(self, j: int, elements: int, samples: int, vec: dict[str, np.ndarray]) -> None:
        """Fold one member's own vectors in (a batch the careful per-site variant measured)."""
        m = self.pack.members[j]
        fold_vectors(self.acc, vec, slice(m.offset, m.offset + m.units))
        self.elements[j] += elements
        self.samples[j] += samples

    def vectors(self, j: int) -> tuple[int, int, dict[str, np.ndarray]]:
        """(elements, samples, per-unit vectors) of member ``j``."""
        m = self.pack.members[j]
        sl = slice(m.offset, m.offset + m.units)
        return int(self.elements[j]), int(self.samples[j]), {f: a[sl] for f, a in self.acc.items()}
