"""A fresh seeded batch "of the same shape and range" as the calibration data, and input boxes.

One reading pass over the calibration batches records each input's per-sample shape,
dtype and value range; the fresh data draws uniformly in that range (integers: inclusive)
with the same batch structure. Nothing here imports torch: tensors are read through
``numpy.asarray``.
"""

from __future__ import annotations

import numpy as np

from ..data import Batch, DataSource, batch_samples, cap_samples
from ..edit.ranges import InputRange

MAX_FRESH_SAMPLES = 512


def _walk(batch: Batch) -> list[tuple[str, object]]:
    args, kwargs = batch
    return [(str(i), a) for i, a in enumerate(args)] + list(kwargs.items())


def data_ranges(source: DataSource, samples: int | None) -> tuple[list[InputRange], list[int], list[str]]:
    """Per input: shape without the batch axis, dtype, min and max; batch sizes; keyword names."""
    found: dict[str, InputRange] = {}
    sizes: list[int] = []
    kw_names: list[str] = []
    for batch in cap_samples(source.batches(), samples):
        sizes.append(batch_samples(batch))
        kw_names = list(batch[1])
        for key, value in _walk(batch):
            a = np.asarray(value)
            if a.ndim == 0 or a.size == 0:
                continue
            lo = float(np.nanmin(a)) if a.dtype.kind in "fiub" else 0.0
            hi = float(np.nanmax(a)) if a.dtype.kind in "fiub" else 0.0
            r = found.get(key)
            if r is None:
                found[key] = InputRange(key, tuple(a.shape[1:]), a.dtype, lo, hi)
            else:
                r.low, r.high = min(r.low, lo), max(r.high, hi)
    return list(found.values()), sizes, kw_names


def fresh_batches(ranges: list[InputRange], sizes: list[int], kw_names: list[str], seed: int) -> list[Batch]:
    """Seeded uniform inputs in each input's range, batched like the calibration data."""
    rng = np.random.default_rng(seed)
    out: list[Batch] = []
    left = MAX_FRESH_SAMPLES
    for n in sizes:
        n = min(n, left)
        if n <= 0:
            break
        left -= n
        args: list[object] = []
        kwargs: dict[str, object] = {}
        for r in ranges:
            shape = (n, *r.shape)
            if r.dtype.kind == "f":
                a = rng.uniform(r.low, r.high, size=shape).astype(r.dtype)
            elif r.dtype.kind in "iu":
                a = rng.integers(int(r.low), int(r.high) + 1, size=shape).astype(r.dtype)
            elif r.dtype.kind == "b":
                a = rng.integers(0, 2, size=shape).astype(bool)
            else:
                a = np.zeros(shape, dtype=r.dtype)
            if r.key in kw_names:
                kwargs[r.key] = a
            else:
                args.append(a)
        out.append((args, kwargs))
    return out
