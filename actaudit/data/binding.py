"""Matching a batch to a model's inputs: by position, by name, or ``arr_N`` (the N-th input).

Both backends bind through here; they differ only in what they convert the values to
(tensors on the model's device, or arrays of the graph's dtypes).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ..errors import CalibrationError
from .batches import Batch, InputSpec

_ARR_RE = re.compile(r"^arr_(\d+)$")


def describe_inputs(specs: Sequence[InputSpec]) -> str:
    """``x 1x3x?x? float32, ids ? int64``: the inputs as a user would type them."""
    parts = []
    for s in specs:
        shape = (
            "?" if s.shape is None else "x".join("?" if d is None else str(d) for d in s.shape) or "scalar"
        )
        parts.append(f"{s.name} {shape} {s.dtype}")
    return ", ".join(parts)


def match_inputs(batch: Batch, specs: Sequence[InputSpec], *, all_required: bool) -> Batch:
    """``(args, kwargs)`` with ``arr_N`` keys turned into positions and a lone unknown key into the first input.

    ``all_required``: every input must be given (a graph), so a batch with more positional
    values than inputs is refused here; a ``forward()`` may have optional arguments instead.
    """
    args, kwargs = batch
    names = [s.name for s in specs]
    extra = dict(kwargs)
    positions = {k: _ARR_RE.match(k) for k in extra}
    if extra and all(positions.values()) and not set(extra) & set(names):
        order = sorted(extra, key=lambda k: int(positions[k].group(1)))  # type: ignore[union-attr]
        args, extra = [*args, *(extra[k] for k in order)], {}
    unknown = [k for k in extra if k not in names]
    if unknown and len(extra) == 1 and not args and (len(names) == 1 or (names and not all_required)):
        return [next(iter(extra.values()))], {}
    if all_required and len(args) > len(names):
        raise CalibrationError(
            f"the batch has {len(args)} positional inputs but the model takes {len(names)}: {names}"
        )
    if unknown and (names or all_required):
        raise CalibrationError(
            f"calibration inputs {sorted(extra)} do not match the model's inputs {names} "
            f"({sorted(unknown)} are not inputs of the model)",
            hint=f"name the arrays after the model's inputs: {describe_inputs(specs)}",
        )
    return list(args), extra


def feeds_by_name(batch: Batch, specs: Sequence[InputSpec]) -> dict[str, object]:
    """Every input of a graph by name, in model order; one clear error for a missing or doubled one."""
    args, extra = match_inputs(batch, specs, all_required=True)
    names = [s.name for s in specs]
    feeds: dict[str, object] = dict(zip(names, args, strict=False))
    twice = [k for k in extra if k in feeds]
    if twice:
        raise CalibrationError(f"inputs {twice} are given both by position and by name")
    feeds.update(extra)
    missing = [n for n in names if n not in feeds]
    if missing:
        given = ", ".join(f"{k} {_shape_dtype(v)}" for k, v in feeds.items()) or "nothing"
        raise CalibrationError(
            f"the model needs inputs {describe_inputs([s for s in specs if s.name in missing])} "
            f"but the batch gives {given}",
            hint="give one array per model input, by position or by name",
        )
    return {n: feeds[n] for n in names}


def _shape_dtype(x: object) -> str:
    shape = getattr(x, "shape", None)
    dtype = getattr(x, "dtype", type(x).__name__)
    return f"{list(shape) if shape is not None else '?'} {dtype}"
