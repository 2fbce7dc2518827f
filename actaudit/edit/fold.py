"""The bias fold, once for every format: a per-unit constant after an activation moved into the next linear op.

A rewrite that lets a ReLU leak changes each unit's mean output by ``shift = slope·E[min(z, 0)]``.
The exact correction subtracts ``shift`` right after the activation (a separate shift node,
:meth:`SlopePlan.shift_for`). The fold instead subtracts ``W·shift`` from the bias of the
op that consumes the activation, which is the same only when that op sees every shifted
value and nothing else:

* the activation has exactly one consumer, reached through ops that keep each unit's
  values (dropout, identity, contiguous), a global average pool (the mean of a per-unit
  constant is that constant), or a flatten/reshape of a channel-layout site to
  ``[N, C·H·W]`` (each unit then spans ``H·W`` consecutive features);
* the consumer is a convolution (units = its input channels) or a linear / matmul
  (units = its input features), with a weight the fold can read;
* a convolution with zero padding sees padded zeros, not shifted values, at the
  borders: the fold is then *approximate* (reported so) rather than exact.

A residual add, a second consumer, a reshape of another layout or any other op stops it.
Each backend keeps only a small walker that describes its own graph in these terms
(:data:`Link`); :func:`fold` applies the rule the same way for all of them, with the
same look-ahead. Only numpy here: no torch, no onnx.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from .slopes import SurgeryResult, bias_shift

LOOKAHEAD = 8  # ops followed from the activation to its linear consumer
APPROXIMATE = " (approximate at zero-padded borders)"

N = TypeVar("N")  # a backend's position in its graph (a node, a value, a tensor name)


@dataclass(frozen=True)
class Fanout:
    """The current value is read by ``count`` ops (or is also a model output)."""

    count: int


@dataclass(frozen=True)
class Pass:
    """An op that keeps every unit's values where they are (dropout, identity, contiguous)."""


@dataclass(frozen=True)
class Pool:
    """An average pool over the spatial axes; ``to_one``: to a single position (a global pool)."""

    name: str
    to_one: bool


@dataclass(frozen=True)
class Flatten:
    """A flatten; ``from_axis_1``: ``[N, C, …] → [N, C·…]`` (start 1, end last)."""

    name: str
    from_axis_1: bool


@dataclass(frozen=True)
class Reshape:
    """A reshape / view to ``target`` (``None`` where a size is not a constant)."""

    name: str
    target: tuple[int | None, ...] | None


@dataclass(frozen=True)
class Other:
    """Any op the fold cannot pass (a residual add, a nonlinearity, a model output, …)."""

    name: str


@dataclass(frozen=True)
class Stop:
    """The walker's own reason to stop (a weight that is not a constant, a loop body, …)."""

    reason: str


@dataclass(frozen=True)
class Consumer:
    """The linear op the activation feeds, as far as the fold needs to know it.

    ``kind``: ``conv`` (weight ``[O, C/g, *k]``), ``linear`` (``[out, in]``) or ``matmul``
    (``[in, out]``). ``bias`` is ``None`` when the op has none yet (the backend adds one).
    ``scale`` is what the op multiplies ``W·x`` by relative to its bias (ONNX Gemm:
    ``alpha / beta``). ``label`` names the bias in the report; ``write`` stores the new bias.
    """

    label: str
    kind: str
    weight: np.ndarray
    bias: np.ndarray | None
    write: Callable[[np.ndarray], None]
    groups: int = 1
    padded: bool = False
    scale: float = 1.0
    write_weight: Callable[[np.ndarray], None] | None = None  # stores a new weight (recycling zeroes columns)


Link = Fanout | Pass | Pool | Flatten | Reshape | Other | Stop | Consumer


@dataclass(frozen=True)
class Folded:
    """Fold ``bias`` into ``consumer``: its new bias, shaped like the old one (``[out]`` if it had none)."""

    consumer: Consumer
    bias: np.ndarray
    exact: bool
    repeat: int = 1  # consecutive input features per unit (a flatten of ``[N, C, H, W]``)

    @property
    def note(self) -> str:
        return self.consumer.label + ("" if self.exact else APPROXIMATE)


@dataclass(frozen=True)
class Refused:
    """No fold: why, in one line."""

    reason: str


def fold(
    shift: np.ndarray,
    unit_axis: int,
    sample_shape: tuple[int, ...],
    start: N,
    step: Callable[[N], tuple[Link, N]],
) -> Folded | Refused:
    """Follow the activation's output with ``step`` (one :data:`Link` and the next position per
    call) and decide the fold of the per-unit ``shift`` into its linear consumer."""
    shift = np.asarray(shift, dtype=np.float64).reshape(-1)
    repeat, flat = 1, False
    spatial = math.prod(sample_shape[1:]) if sample_shape else 1
    cur = start
    for _ in range(LOOKAHEAD):
        link, cur = step(cur)
        if isinstance(link, Consumer):
            return _into(link, shift, unit_axis, sample_shape, repeat, flat)
        if isinstance(link, Pass):
            continue
        if isinstance(link, Fanout):
            return Refused(f"its output feeds {link.count} ops; the fold needs exactly one linear consumer")
        if isinstance(link, (Stop, Other)):
            return Refused(link.reason if isinstance(link, Stop) else _not_linear(link.name))
        if unit_axis != 1:  # pools and flattens are followed for channel-layout sites only
            return Refused(_not_linear(link.name))
        if isinstance(link, Pool):
            if not link.to_one:
                return Refused("an adaptive pool to more than one position sits before the next op")
            spatial = 1  # the mean of a per-channel constant is that constant
            continue
        if isinstance(link, Flatten) and not link.from_axis_1:
            return Refused(f"a {link.name} other than flatten(x, 1) sits before the next op")
        if isinstance(link, Reshape) and not _flattens(link.target, shift.size * spatial):
            return Refused(f"a {link.name} other than [N, C·H·W] sits before the next op")
        repeat, flat = spatial, True
    return Refused("no conv or linear within a few ops")


def _not_linear(name: str) -> str:
    return f"the next op is {name}, not a conv or linear"


def _flattens(target: tuple[int | None, ...] | None, features: int) -> bool:
    return target is not None and len(target) == 2 and target[1] in (-1, features)


def _into(
    c: Consumer, shift: np.ndarray, unit_axis: int, sample_shape: tuple[int, ...], repeat: int, flat: bool
) -> Folded | Refused:
    w = np.asarray(c.weight)
    if c.kind == "conv":
        if unit_axis != 1 or repeat != 1:
            return Refused("the next conv does not take this site's units as input channels")
        inputs, out = (w.shape[1] * c.groups if w.ndim >= 2 else -1), w.shape[0]
    else:
        if not flat and unit_axis != len(sample_shape):
            return Refused("the next linear op does not take this site's units as input features")
        if w.ndim != 2:
            return Refused(f"the next linear op's weight has {w.ndim} dimensions, not 2")
        inputs, out = (w.shape[1], w.shape[0]) if c.kind == "linear" else (w.shape[0], w.shape[1])
    if inputs != shift.size * repeat:
        return Refused(f"the next op takes {inputs} inputs where this site gives {shift.size * repeat}")
    old = np.zeros(out, dtype=w.dtype) if c.bias is None else np.asarray(c.bias)
    if old.size not in (1, out):
        return Refused("the next op's bias does not hold one value per output")
    delta = c.scale * bias_shift(c.kind, w, shift, groups=c.groups, repeat=repeat)
    new = np.broadcast_to(old.astype(np.float64).reshape(-1), (out,)) - delta
    shape = old.shape if old.size == out else (out,)
    return Folded(c, new.reshape(shape).astype(old.dtype), exact=not c.padded, repeat=repeat)


def settle(res: SurgeryResult, name: str, got: Folded | Refused) -> None:
    """Write a fold's new bias and record at site ``name`` what happened."""
    if isinstance(got, Refused):
        res.not_compensated[name] = got.reason
        return
    got.consumer.write(got.bias)
    res.compensated[name] = got.note
    res.not_compensated.pop(name, None)
