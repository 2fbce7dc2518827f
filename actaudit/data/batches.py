"""Batches: what one batch is, where batches come from, and how they are counted, capped and re-cut.

A batch is ``(args, kwargs)``: positional and keyword inputs, each a NumPy array or
(from ``.pt`` files and loaders) a torch tensor. Backends convert. Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

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

    def to_dict(self) -> dict[str, Any]:
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
    details: dict[str, Any] = field(default_factory=dict)


def leading_dim(x: Any) -> int:
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


def normalize_batch(item: Any) -> Batch:
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


def rechunk(batches: Iterable[Batch], size: int) -> Iterator[Batch]:
    """Re-slice batches into exactly ``size`` samples (a model with a fixed batch dimension).

    A last partial chunk is dropped only if it cannot be fed; callers report how many
    samples were used.
    """
    pending: list[Batch] = []
    have = 0
    for b in batches:
        pending.append(b)
        have += batch_samples(b)
        while have >= size:
            merged = _concat(pending)
            yield _take(merged, 0, size)
            rest = _take(merged, size, have)
            have -= size
            pending = [rest] if have else []


def _concat(batches: list[Batch]) -> Batch:
    if len(batches) == 1:
        return batches[0]
    first_args, first_kwargs = batches[0]
    args = [_cat([b[0][i] for b in batches]) for i in range(len(first_args))]
    kwargs = {k: _cat([b[1][k] for b in batches]) for k in first_kwargs}
    return args, kwargs


def _cat(xs: list[Any]) -> Any:
    if type(xs[0]).__name__ == "Tensor":
        import torch  # only reached with torch tensors, i.e. torch is loaded already

        return torch.cat(xs, 0)
    return np.concatenate([np.asarray(x) for x in xs], 0)


def _take(b: Batch, start: int, stop: int) -> Batch:
    args, kwargs = b
    return [x[start:stop] for x in args], {k: v[start:stop] for k, v in kwargs.items()}


def _slice0(x: Any, n: int) -> Any:
    if hasattr(x, "shape") and len(x.shape) > 0:
        return x[:n]
    return x
