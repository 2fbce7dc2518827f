"""Calibration batches bound to the model's inputs: names, dtypes, declared shapes, fixed batch sizes."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from ...data import Batch, DataSource, cap_samples, rechunk
from ...data.binding import describe_inputs, feeds_by_name
from ...errors import CalibrationError
from .load import OnnxModel

__all__ = ["batches_for", "bind", "bound_batches"]


# -- binding batches to inputs ------------------------------------------------------------------
def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype == torch.bfloat16:
            x = x.float()
        return x.numpy()
    if isinstance(x, (int, float, bool, np.generic, list, tuple)):
        return np.asarray(x)
    raise CalibrationError(f"calibration inputs must be arrays or tensors, not {type(x).__name__}")


def bind(handle: OnnxModel, batch: Batch) -> dict[str, np.ndarray]:
    """Every input by name (:func:`actaudit.data.binding.feeds_by_name`), as arrays of the graph's dtypes."""
    return {n: _cast(n, _to_numpy(v), handle) for n, v in feeds_by_name(batch, handle.inputs).items()}


def bound_batches(handle: OnnxModel, stream: Iterable[Batch], warnings: list[str]) -> Iterator[Batch]:
    """Batches bound by name, re-cut to the declared fixed batch size (the one path, as for torch)."""
    bound: Iterator[Batch] = (([], bind(handle, b)) for b in stream)
    if handle.fixed_batch is None:
        return bound
    return rechunk(bound, handle.fixed_batch, whole=handle.unbatched, warnings=warnings)


def _cast(name: str, x: np.ndarray, handle: OnnxModel) -> np.ndarray:
    want = handle.input_types.get(name)
    if x.dtype.hasobject:
        raise CalibrationError(f"input {name!r}: arrays of Python objects are not calibration data")
    if want is None or x.dtype == want:
        return np.asarray(x, order="C")
    if np.issubdtype(want, np.floating) and (
        np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)
    ):
        from ...hints import cast_note, float_cast_note

        floats = np.issubdtype(x.dtype, np.floating)
        note = (float_cast_note if floats else cast_note)(name, str(x.dtype), str(np.dtype(want)))
        if note not in handle.notes:
            handle.notes.append(note)
        return np.asarray(x, dtype=want, order="C")
    if np.issubdtype(want, np.integer) and np.issubdtype(x.dtype, np.integer):
        if x.size and (x.min() < np.iinfo(want).min or x.max() > np.iinfo(want).max):
            raise CalibrationError(f"input {name!r}: values do not fit the model's {want}")
        return np.asarray(x, dtype=want, order="C")
    if want == np.bool_ and (x.dtype == np.bool_ or np.issubdtype(x.dtype, np.integer)):
        return np.asarray(x != 0, order="C")
    raise CalibrationError(
        f"input {name!r} is {x.dtype} {list(x.shape)} but the model expects {want}",
        hint=f"the model's inputs are {describe_inputs(handle.inputs)}",
    )


def _check_shapes(handle: OnnxModel, feeds: dict[str, np.ndarray]) -> None:
    for name, x in feeds.items():
        want = handle.declared.get(name)
        if want is None:
            continue
        ok = len(want) == x.ndim and all(w is None or w == g for w, g in zip(want, x.shape, strict=False))
        if not ok:
            from ...hints import layout_hint

            fix = layout_hint(tuple(x.shape), want)
            raise CalibrationError(
                f"input {name!r} has shape {list(x.shape)} but the model expects "
                f"{['?' if d is None else d for d in want]}",
                hint=(f"{fix}; " if fix else "") + f"the model's inputs are {describe_inputs(handle.inputs)}",
            )


def batches_for(
    handle: OnnxModel, source: DataSource, samples: int | None, warnings: list[str] | None = None
) -> Iterator[Batch]:
    return bound_batches(handle, cap_samples(source.batches(), samples), [] if warnings is None else warnings)


def _chunk_samples(handle: OnnxModel, chunk: dict[str, np.ndarray], default: int) -> int:
    """Samples in a chunk: the leading dimension of the first input (in model order) that has one."""
    for spec in handle.inputs:
        x = chunk.get(spec.name)
        if x is not None and x.ndim > 0:
            return int(x.shape[0])
    return default
