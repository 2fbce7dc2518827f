"""Batches: what one batch is, where batches come from, and how they are counted, capped and re-cut.

A batch is ``(args, kwargs)``: positional and keyword inputs, each a NumPy array or
(from ``.pt`` files and loaders) a torch tensor. Backends convert. Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import CalibrationError

Batch = tuple[list[Any], dict[str, Any]]
DEFAULT_BATCH_SIZE = 32
DEFAULT_SYNTHETIC_SAMPLES = 64
DEFAULT_SEED = 0


@dataclass
class InputSpec:
    """A model input as the backend knows it; ``None`` dims are dynamic."""

    name: str
    shape: tuple[int | None, ...] | None = None
    dtype: str = "float32"

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "shape": None if self.shape is None else [d if d is not None else "?" for d in self.shape],
            "dtype": self.dtype,
        }


@dataclass
class DataSource:
    """Where the batches come from, and how many samples to take."""

    batches: Callable[[], Iterator[Batch]]
    description: str
    synthetic: bool = False
    total_samples: int | None = None  # when known up front
    details: dict[str, object] = field(default_factory=dict)


def leading_dim(x: object) -> int:
    shape = getattr(x, "shape", None)
    if shape is None or len(shape) == 0:
        return 1
    return int(shape[0])


def batch_samples(batch: Batch) -> int:
    args, kwargs = batch
    for x in [*args, *kwargs.values()]:
        if hasattr(x, "shape") and len(x.shape) > 0:
            return leading_dim(x)
    return 1


def normalize_batch(item: object) -> Batch:
    """A loader item: a tensor/array, a tuple/list of positional inputs, or a dict of keyword inputs."""
    if isinstance(item, dict):
        return [], dict(item)
    if isinstance(item, (tuple, list)):
        return list(item), {}
    return [item], {}


def cap_samples(batches: Iterable[Batch], cap: int | None) -> Iterator[Batch]:
    """Stop after ``cap`` samples, slicing the last batch along axis 0."""
    seen = 0
    for args, kwargs in batches:
        n = batch_samples((args, kwargs))
        if cap is not None and seen + n > cap:
            keep = cap - seen
            if keep <= 0:
                return
            args = [_slice0(a, keep) for a in args]
            kwargs = {k: _slice0(v, keep) for k, v in kwargs.items()}
            yield args, kwargs
            return
        seen += n
        yield args, kwargs


def rechunk(
    batches: Iterable[Batch],
    size: int,
    *,
    whole: Collection[str] = (),
    warnings: list[str] | None = None,
) -> Iterator[Batch]:
    """Re-slice batches into exactly ``size`` samples (a model with a fixed batch dimension).

    Samples carry over from one batch to the next; keyword inputs named in ``whole`` are
    not batched (a recurrent state) and go as they are with every chunk. A last partial
    chunk cannot be fed: it is reported in ``warnings``; data with fewer than ``size``
    samples in all is an error.
    """
    pending: list[Batch] = []
    have = fed = 0
    for b in batches:
        pending.append(b)
        have += _batched_samples(b, whole)
        while have >= size:
            merged = _concat(pending, whole)
            yield _take(merged, 0, size, whole)
            fed += size
            rest = _take(merged, size, have, whole)
            have -= size
            pending = [rest] if have else []
    if have and not fed:
        raise CalibrationError(
            f"the model's batch dimension is fixed at {size} but the calibration data has {have} sample(s)",
            hint=f"give at least {size} samples",
        )
    if have and warnings is not None:
        warnings.append(f"the model's batch dimension is fixed at {size}: {have} sample(s) were not used")


def declared_fixed_batch(specs: Sequence[InputSpec]) -> tuple[int | None, frozenset[str]]:
    """The batch size a graph's declared input shapes fix (None if free), and the inputs not batched.

    An input with a free leading dimension is the batch axis: then nothing is fixed, and a
    fixed leading dimension elsewhere (a recurrent state ``[1, 1, 128]``) is not a batch.
    Otherwise the largest declared leading dimension is the batch; inputs declaring
    another one, no axes or no shape at all go whole with every chunk.
    """
    ranked = [s for s in specs if s.shape]
    if not ranked or any(s.shape[0] is None for s in ranked if s.shape):
        return None, frozenset()
    size = max(int(s.shape[0]) for s in ranked if s.shape and s.shape[0] is not None)
    whole = {s.name for s in specs if not s.shape or s.shape[0] != size}
    return size, frozenset(whole)


def _batched_samples(b: Batch, whole: Collection[str]) -> int:
    args, kwargs = b
    return batch_samples((args, {k: v for k, v in kwargs.items() if k not in whole}))


def _concat(batches: list[Batch], whole: Collection[str]) -> Batch:
    if len(batches) == 1:
        return batches[0]
    first_args, first_kwargs = batches[0]
    args = [_cat([b[0][i] for b in batches]) for i in range(len(first_args))]
    kwargs = {k: v if k in whole else _cat([b[1][k] for b in batches]) for k, v in first_kwargs.items()}
    return args, kwargs


def _cat(xs: list[Any]) -> Any:
    if type(xs[0]).__name__ == "Tensor":
        import torch  # only reached with torch tensors, i.e. torch is loaded already

        return torch.cat(xs, 0)
    return np.concatenate([np.asarray(x) for x in xs], 0)


def _take(b: Batch, start: int, stop: int, whole: Collection[str]) -> Batch:
    args, kwargs = b
    return [x[start:stop] for x in args], {k: v if k in whole else v[start:stop] for k, v in kwargs.items()}


def _slice0(x: Any, n: int) -> Any:
    if hasattr(x, "shape") and len(x.shape) > 0:
        return x[:n]
    return x
