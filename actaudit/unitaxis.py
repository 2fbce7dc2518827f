"""Which axis of a tensor indexes units, followed through shape ops: one rule for both backends.

A unit tag (:class:`Tag`) is set where a Conv (axis 1) or a Linear/MatMul (last axis)
produces a tensor, and follows the tensor through every op that keeps a traceable axis:
elementwise ops (numpy broadcasting aligns axes on the right), normalisation, pooling,
Concat / Split / Slice, Gather on another axis, Squeeze / Unsqueeze, Reshape and Flatten
where the axis maps onto one output axis of the same size, Transpose / Permute. Where the
producer says nothing, the consumer decides (a Conv consuming the activation means axis 1,
a MatMul the last axis). The batch axis (0) is never a unit axis: a tensor whose only
axis is the batch (``[batch]``, or a scalar) is one unit, whatever the batch size.

Shapes are tuples of ints, with ``None`` for a dimension unknown before run time (ONNX);
no torch or onnx import here, so both backends apply exactly the same rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

CONV = "conv"
LINEAR = "linear"

# Where a site's unit axis came from (the JSON's ``unit_axis_source``).
PRODUCER = "producer"  # followed from the Conv / Linear that produced it
CONSUMER = "consumer"  # decided by the op that consumes the activation
OVERRIDE = "override"  # --unit-axis
WHOLE = "whole"  # no axis but the batch (rank <= 1): the whole activation is one unit
GUESSED = "guessed"  # undetermined: by rank (2-3 → last, 4+ → 1), with a warning

Shape = Sequence[int | None]


@dataclass(frozen=True)
class Tag:
    """The unit axis (an index >= 1 into the tensor it is attached to) and the op it came from.

    ``whole``: the unit axis had size 1 and a Squeeze / Reshape removed it (a Conv with one
    output channel, squeezed before a sigmoid head): the whole activation is that one unit,
    whatever the other axes are; ``axis`` is then meaningless. Every op keeps such a tag.
    """

    axis: int
    origin: str  # CONV or LINEAR
    whole: bool = False


def produced(origin: str, rank: int) -> Tag | None:
    """The tag of a Conv (axis 1) or Linear (last axis) output of ``rank`` dimensions."""
    axis = 1 if origin == CONV else rank - 1
    return Tag(axis, origin) if 1 <= axis < rank else None


def _valid(tag: Tag | None, rank: int) -> Tag | None:
    if tag is not None and tag.whole:
        return tag
    return tag if tag is not None and 1 <= tag.axis < rank else None


def _one(tag: Tag) -> Tag:
    """The tag of a tensor whose size-1 unit axis was removed: one unit, the whole activation."""
    return Tag(0, tag.origin, whole=True)


def elementwise(tag: Tag | None, in_rank: int, out_rank: int) -> Tag | None:
    """Broadcasting aligns axes on the right."""
    if tag is None or tag.whole:
        return tag
    return _valid(Tag(tag.axis + out_rank - in_rank, tag.origin), out_rank)


def same(tag: Tag | None, rank: int) -> Tag | None:
    """Ops that keep every axis in place (Concat, Split, Slice, Pad, normalisation)."""
    return _valid(tag, rank)


def spatial(tag: Tag | None, rank: int) -> Tag | None:
    """Pooling and resampling change the trailing spatial axes: only axis 1 (channels) survives."""
    return _valid(tag, rank) if tag is not None and (tag.axis == 1 or tag.whole) else None


def remove_axes(tag: Tag | None, axes: Sequence[int], in_rank: int, squeeze: bool = False) -> Tag | None:
    """Squeeze, a reduction without keepdims, Gather / select with a scalar index.

    ``squeeze``: the removed axes have size 1 (a Squeeze): removing the unit axis leaves one unit.
    """
    if tag is None or tag.whole:
        return tag
    norm = {a + in_rank if a < 0 else a for a in axes}
    if tag.axis in norm:
        return _one(tag) if squeeze else None
    return _valid(Tag(tag.axis - sum(1 for a in norm if a < tag.axis), tag.origin), in_rank - len(norm))


def insert_axes(tag: Tag | None, axes: Sequence[int], out_rank: int) -> Tag | None:
    """Unsqueeze: ``axes`` are positions in the output."""
    if tag is None or tag.whole:
        return tag
    norm = sorted(a + out_rank if a < 0 else a for a in axes)
    axis = tag.axis
    for a in norm:
        if a <= axis:
            axis += 1
    return _valid(Tag(axis, tag.origin), out_rank)


def gather(tag: Tag | None, axis: int, index_rank: int, in_rank: int) -> Tag | None:
    """Gather along ``axis`` with an index of ``index_rank`` dims: that axis is replaced by the index's."""
    if tag is None or tag.whole:
        return tag
    axis = axis + in_rank if axis < 0 else axis
    if tag.axis == axis:
        return None
    if tag.axis < axis:
        return _valid(tag, in_rank - 1 + index_rank)
    return _valid(Tag(tag.axis + index_rank - 1, tag.origin), in_rank - 1 + index_rank)


def permute(tag: Tag | None, perm: Sequence[int]) -> Tag | None:
    """Transpose / Permute: output axis ``i`` is input axis ``perm[i]``."""
    if tag is None or tag.whole:
        return tag
    rank = len(perm)
    norm = [p + rank if p < 0 else p for p in perm]
    if tag.axis not in norm:
        return None
    return _valid(Tag(norm.index(tag.axis), tag.origin), rank)


def _prefix(shape: Shape, k: int) -> tuple[int, int]:
    """(product of the known dims, number of unknown dims) before axis ``k``."""
    known, unknown = 1, 0
    for d in shape[:k]:
        if d is None or d < 0:
            unknown += 1
        else:
            known *= int(d)
    return known, unknown


def reshape(tag: Tag | None, in_shape: Shape | None, out_shape: Shape | None) -> Tag | None:
    """Reshape / View / Flatten / Squeeze / Unsqueeze by shapes: the unit axis maps onto output
    axis ``j`` when everything before it holds the same elements and axis ``j`` has the same size.

    Unknown dimensions match only unknown dimensions in the same number (the batch axis
    ``None`` before and after), so a mapping is never invented.
    """
    if tag is None or tag.whole:
        return tag
    if in_shape is None or out_shape is None or not 1 <= tag.axis < len(in_shape):
        return None
    size = in_shape[tag.axis]
    if size is None:
        return None
    want = _prefix(in_shape, tag.axis)
    for j in range(1, len(out_shape)):
        if out_shape[j] == size and _prefix(out_shape, j) == want:
            return Tag(j, tag.origin)
    if size == 1 and len(out_shape) < len(in_shape) and 1 not in out_shape[1:]:
        return _one(tag)  # the size-1 unit axis was squeezed away: one unit
    return None


def guessed_axis(rank: int) -> int | None:
    """The fallback for an undetermined axis: none for rank <= 1, last for rank 2-3, 1 for 4+."""
    if rank <= 1:
        return None
    return rank - 1 if rank <= 3 else 1


def resolve(tag: Tag | None, rank: int) -> tuple[int | None, str]:
    """(unit axis, source) of a site whose tensor has ``rank`` dims; ``None`` axis: one unit."""
    if rank <= 1:
        return None, WHOLE
    t = _valid(tag, rank)
    if t is not None and t.whole:
        return None, WHOLE  # a size-1 unit axis squeezed away: the whole activation is one unit
    if t is not None:
        return t.axis, PRODUCER
    return guessed_axis(rank), GUESSED


def guessed_warning(names: Sequence[str]) -> str | None:
    """The report's warning for sites whose unit axis no producer or consumer determined."""
    if not names:
        return None
    shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
    return (
        f"the unit axis of {len(names)} site(s) was guessed from the rank (the channel or feature axis of "
        f"their producer could not be followed to them, and no consumer fixed it): {shown}; "
        "check them or set --unit-axis SITE=AXIS"
    )
