"""Torch-side calibration data: ``.pt`` batch lists and conversion of batches to tensors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ...data import Batch, DataSource, InputSpec, batch_samples, normalize_batch
from ...data.binding import match_inputs
from ...errors import CalibrationError


def load_pt_batches(p: Path) -> DataSource:
    """A ``.pt`` file holding a list of ready batches, loaded with ``weights_only=True``."""
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as e:
        text = " ".join(str(e).split())[:200]
        raise CalibrationError(
            f"cannot load calibration file {p} with weights_only=True: {text}",
            hint="a .pt calibration file must hold a list of tensors, tuples of tensors or dicts of tensors",
        ) from None
    if isinstance(obj, torch.Tensor):
        obj = [obj]
    if not isinstance(obj, (list, tuple)) or not obj:
        raise CalibrationError(
            f"calibration file {p} holds {type(obj).__name__}, not a non-empty list of batches"
        )
    batches = [normalize_batch(b) for b in obj]
    total = sum(batch_samples(b) for b in batches)
    if total == 0:
        raise CalibrationError(
            f"calibration file {p} holds {len(batches)} batch(es) with 0 samples",
            hint="an audit of no data would pass every gate; give batches with at least one sample",
        )
    return DataSource(lambda: iter(batches), str(p), total_samples=total, details={"batches": len(batches)})


def _to_tensor(x: object, device: torch.device, float_dtype: torch.dtype | None) -> object:
    if isinstance(x, np.ndarray):
        if x.dtype.hasobject:
            raise CalibrationError("calibration arrays must be numeric, not Python objects")
        x = torch.tensor(np.asarray(x))  # copies: memory-mapped arrays are read-only
    if isinstance(x, torch.Tensor):
        if float_dtype is not None and x.is_floating_point() and x.dtype != float_dtype:
            x = x.to(float_dtype)
        return x.to(device)
    if isinstance(x, (list, tuple)):
        return type(x)(_to_tensor(v, device, float_dtype) for v in x)
    if isinstance(x, dict):
        return {k: _to_tensor(v, device, float_dtype) for k, v in x.items()}
    return x


def _float_note(name: str, x: object, want: torch.dtype, notes: list[str]) -> None:
    """One note per input whose float data is rounded to (or widened to) the model's float type."""
    if isinstance(x, np.ndarray) and np.issubdtype(x.dtype, np.floating):
        given = str(x.dtype)
    elif isinstance(x, torch.Tensor) and x.is_floating_point():
        given = str(x.dtype).removeprefix("torch.")
    else:
        return
    wanted = str(want).removeprefix("torch.")
    if given != wanted:
        from ...hints import float_cast_note

        note = float_cast_note(name, given, wanted)
        if note not in notes:
            notes.append(note)


def bind(
    batch: Batch,
    inputs: list[InputSpec],
    device: torch.device,
    float_dtype: torch.dtype | None,
    notes: list[str] | None = None,
) -> Batch:
    """Match a batch to the model's inputs (:func:`actaudit.data.binding.match_inputs`), as tensors.

    A ``forward()`` may have optional arguments: inputs may be left out.
    """
    args, kwargs = match_inputs(batch, inputs, all_required=False)
    if notes is not None and float_dtype is not None:
        named = [*zip((s.name for s in inputs), args, strict=False), *kwargs.items()]
        for name, x in named:
            _float_note(name, x, float_dtype, notes)
    return (
        [_to_tensor(a, device, float_dtype) for a in args],
        {k: _to_tensor(v, device, float_dtype) for k, v in kwargs.items()},
    )
