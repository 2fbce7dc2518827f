"""Calibration batches bound to the model's inputs: names, dtypes, declared shapes, fixed batch sizes."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import numpy as np

from ...data import Batch, DataSource, InputSpec, cap_samples
from ...errors import CalibrationError
from .load import OnnxModel

__all__ = ["batches_for", "bind"]

_ARR_PREFIX = "arr_"


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
    """Positional inputs in model order, keyword inputs by name (``arr_N`` means position N)."""
    args, kwargs = batch
    names = [s.name for s in handle.inputs]
    feeds: dict[str, Any] = {}
    extra = dict(kwargs)
    if (
        extra
        and all(k.startswith(_ARR_PREFIX) and k[len(_ARR_PREFIX) :].isdigit() for k in extra)
        and not set(extra) & set(names)
    ):
        args = [*args, *(extra[k] for k in sorted(extra, key=lambda k: int(k[len(_ARR_PREFIX) :])))]
        extra = {}
    if len(extra) == 1 and len(names) == 1 and not args and next(iter(extra)) not in names:
        args, extra = [next(iter(extra.values()))], {}
    if len(args) > len(names):
        raise CalibrationError(
            f"the batch has {len(args)} positional inputs but the model takes {len(names)}: {names}"
        )
    for name, value in zip(names, args, strict=False):
        feeds[name] = value
    unknown = [k for k in extra if k not in names]
    if unknown:
        raise CalibrationError(
            f"calibration inputs {sorted(unknown)} are not inputs of the model",
            hint=f"the model's inputs are {_describe(handle.inputs)}",
        )
    twice = [k for k in extra if k in feeds]
    if twice:
        raise CalibrationError(f"inputs {twice} are given both by position and by name")
    feeds.update(extra)
    missing = [n for n in names if n not in feeds]
    if missing:
        given = ", ".join(f"{k} {_shape_dtype(v)}" for k, v in feeds.items()) or "nothing"
        raise CalibrationError(
            f"the model needs inputs {_describe([s for s in handle.inputs if s.name in missing])} "
            f"but the batch gives {given}",
            hint="give one array per model input, by position or by name",
        )
    return {n: _cast(n, _to_numpy(feeds[n]), handle) for n in names}


def _cast(name: str, x: np.ndarray, handle: OnnxModel) -> np.ndarray:
    want = handle.input_types.get(name)
    if x.dtype.hasobject:
        raise CalibrationError(f"input {name!r}: arrays of Python objects are not calibration data")
    if want is None or x.dtype == want:
        return np.asarray(x, order="C")
    if np.issubdtype(want, np.floating) and (
        np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)
    ):
        if not np.issubdtype(x.dtype, np.floating):
            from ...hints import cast_note

            note = cast_note(name, str(x.dtype), str(want))
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
        hint=f"the model's inputs are {_describe(handle.inputs)}",
    )


def _shape_dtype(x: Any) -> str:
    shape = getattr(x, "shape", None)
    dtype = getattr(x, "dtype", type(x).__name__)
    return f"{list(shape) if shape is not None else '?'} {dtype}"


def _describe(specs: list[InputSpec]) -> str:
    parts = []
    for s in specs:
        shape = (
            "?" if s.shape is None else "x".join("?" if d is None else str(d) for d in s.shape) or "scalar"
        )
        parts.append(f"{s.name} {shape} {s.dtype}")
    return ", ".join(parts)


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
                hint=(f"{fix}; " if fix else "") + f"the model's inputs are {_describe(handle.inputs)}",
            )


def _split_fixed_batch(
    handle: OnnxModel, feeds: dict[str, np.ndarray], warnings: list[str]
) -> list[dict[str, np.ndarray]]:
    """Chunks that fit a fixed batch dimension; other inputs go whole with every chunk.

    Only when no input has a free leading dimension: if one has, that is the batch axis,
    and a fixed leading dimension elsewhere (a recurrent state ``[1, 1, 128]``) is not.
    """
    free = [s.name for s in handle.inputs if s.shape and s.shape[0] is None and feeds[s.name].ndim > 0]
    if free:
        return [feeds]
    fixed = {}
    for name, x in feeds.items():
        want = handle.declared.get(name)
        if want and x.ndim == len(want) and want[0] is not None and x.shape[0] != want[0]:
            fixed[name] = want[0]
    if not fixed:
        return [feeds]
    sizes = {int(feeds[n].shape[0]) for n in fixed}
    steps = set(fixed.values())
    if len(sizes) != 1 or len(steps) != 1:
        bad = {n: (list(feeds[n].shape), handle.declared[n]) for n in fixed}
        raise CalibrationError(f"inputs do not fit the model's fixed dimensions: given/expected {bad}")
    n, step = sizes.pop(), steps.pop()
    if n < step or n % step:
        usable = n - n % step
        if usable == 0:
            raise CalibrationError(
                f"the model's batch dimension is fixed at {step} but a batch has {n} samples",
                hint=f"use --batch-size {step} (or a multiple of it)",
            )
        warnings.append(
            f"the model's batch dimension is fixed at {step}: {n - usable} sample(s) of a batch of {n} were not used"
        )
        n = usable
    out = []
    for start in range(0, n, step):
        chunk = dict(feeds)
        for name in fixed:
            chunk[name] = feeds[name][start : start + step]
        out.append(chunk)
    return out


def batches_for(handle: OnnxModel, source: DataSource, samples: int | None) -> Iterator[Batch]:
    yield from cap_samples(source.batches(), samples)


def _chunk_samples(handle: OnnxModel, chunk: dict[str, np.ndarray], default: int) -> int:
    """Samples in a chunk: the leading dimension of the first input (in model order) that has one."""
    for spec in handle.inputs:
        x = chunk.get(spec.name)
        if x is not None and x.ndim > 0:
            return int(x.shape[0])
    return default
