"""Synthetic calibration inputs from ``--input-shape`` and the shapes a model declares."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

import numpy as np

from ..errors import InputError
from .arrays import available_memory
from .batches import Batch, DataSource, InputSpec

_DIM_RE = re.compile(r"^\d+(x\d+)*$")


def split_input_dtypes(specs: Iterable[str]) -> tuple[list[str], dict[str | None, str]]:
    """``NAME=DIMS:DTYPE`` → (``NAME=DIMS`` specs, {name: dtype}); a dtype must be a numpy one (int64, float16)."""
    plain: list[str] = []
    dtypes: dict[str | None, str] = {}
    for spec in specs:
        head, sep, dtype = spec.rpartition(":")
        if not sep:
            plain.append(spec)
            continue
        try:
            dt = np.dtype(dtype.strip())
        except TypeError:
            raise InputError(
                f"--input-shape {spec!r}: {dtype!r} is not a dtype", hint="e.g. input_ids=1x128:int64"
            ) from None
        if dt.hasobject or dt.kind not in "biuf":
            raise InputError(
                f"--input-shape {spec!r}: {dt} is not a numeric dtype", hint="e.g. :int64 or :float16"
            )
        plain.append(head)
        name = head.rpartition("=")[0] if "=" in head else None
        dtypes[name or None] = str(dt)
    return plain, dtypes


def parse_input_shapes(specs: Iterable[str]) -> dict[str | None, tuple[int, ...]]:
    """``1x3x224x224`` (the only/first input) or ``NAME=1x3x224x224``."""
    out: dict[str | None, tuple[int, ...]] = {}
    for spec in specs:
        name, _, dims = spec.rpartition("=") if "=" in spec else (None, "", spec)
        dims = dims.strip().lower().replace(",", "x")
        if not _DIM_RE.match(dims):
            raise InputError(f"--input-shape {spec!r} is not DIMS or NAME=DIMS with DIMS like 1x3x224x224")
        shape = tuple(int(d) for d in dims.split("x"))
        if any(d == 0 for d in shape):
            raise InputError(f"--input-shape {spec!r} has a zero dimension")
        out[name or None] = shape
    return out


# (name, shape, dtype, batched): one drawn array per model input
_Resolved = list[tuple[str, tuple[int, ...], str, bool]]


def _resolve(specs: list[InputSpec], shapes: dict[str | None, tuple[int, ...]]) -> _Resolved:
    """Each input's shape: from ``--input-shape`` (batched), else as the model declares it."""
    resolved: list[tuple[str, tuple[int, ...], str, bool]] = []
    unnamed = shapes.get(None)
    any_dynamic = any(s.shape is not None and len(s.shape) > 0 and s.shape[0] is None for s in specs)
    for i, spec in enumerate(specs):
        shape = shapes.get(spec.name)
        if shape is None and unnamed is not None and i == 0:
            shape = unnamed
        if shape is not None:
            resolved.append((spec.name, shape, spec.dtype, True))
            continue
        declared = spec.shape
        if declared is not None and len(declared) == 0:
            resolved.append((spec.name, (), spec.dtype, False))
            continue
        if declared is not None and all(d is not None for d in declared[1:]):
            fixed = any_dynamic and declared[0] is not None
            resolved.append(
                (spec.name, tuple(int(d) if d is not None else 1 for d in declared), spec.dtype, not fixed)
            )
            continue
        known = "" if declared is None else f" (the model declares {spec.to_dict()['shape']})"
        raise InputError(
            f"no shape for input {spec.name!r}{known}",
            hint=f"pass --input-shape {spec.name}=DIMS, e.g. 1x3x224x224, or give --calib",
        )
    unknown = [n for n in shapes if n is not None and n not in {s.name for s in specs}]
    if unknown:
        raise InputError(
            f"--input-shape names unknown input(s) {unknown}", hint=f"inputs are {[s.name for s in specs]}"
        )
    return resolved


def synthetic(
    specs: list[InputSpec],
    shapes: dict[str | None, tuple[int, ...]],
    *,
    samples: int,
    batch_size: int,
    seed: int,
    val_range: tuple[float, float] | None = None,
) -> DataSource:
    """Standard-normal floats (integers in [0, 2) for integer inputs), reproducible from ``seed``.

    ``val_range`` (``--val-range LOW,HIGH``) draws uniformly from that range instead:
    integers in [LOW, HIGH] (token ids below a vocabulary size), floats in [LOW, HIGH).

    The leading dimension of a shape given with ``--input-shape`` is the batch axis and is
    set by ``batch_size``. Shapes the model declares keep what it fixes: a scalar input stays
    a scalar, and an input whose first dimension is fixed while another input's is free
    (a recurrent state, say) is fed as declared in every batch.
    """
    resolved = _resolve(specs, shapes)
    per_batch = sum(
        int(np.prod(s[1:] if b else s)) * (batch_size if b else 1) * np.dtype(d).itemsize
        for _, s, d, b in resolved
    )
    if per_batch > available_memory() // 4:
        raise InputError(
            f"synthetic inputs of {per_batch / 2**30:.1f} GiB per batch exceed a quarter of the available memory",
            hint="lower --batch-size or the --input-shape dimensions",
        )

    def batches() -> Iterator[Batch]:
        rng = np.random.default_rng(seed)
        done = 0
        while done < samples:
            n = min(batch_size, samples - done)
            arrays = []
            for _, shape, dtype, batched in resolved:
                full = (n, *shape[1:]) if batched else shape
                if np.issubdtype(np.dtype(dtype), np.integer):
                    lo, hi = (int(val_range[0]), int(val_range[1]) + 1) if val_range else (0, 2)
                    arrays.append(rng.integers(lo, hi, size=full).astype(dtype))
                elif val_range is not None and np.dtype(dtype) != np.bool_:
                    arrays.append(rng.uniform(val_range[0], val_range[1], size=full).astype(dtype))
                elif np.dtype(dtype) == np.bool_:
                    arrays.append(rng.integers(0, 2, size=full).astype(bool))
                else:
                    arrays.append(rng.standard_normal(full).astype(dtype))
            done += n
            yield arrays, {}

    desc = "synthetic " + ", ".join(
        f"{n}={'x'.join(map(str, s[1:] if b else s)) or 'scalar'}" for n, s, _, b in resolved
    )
    return DataSource(batches, desc, synthetic=True, total_samples=samples, details={"seed": seed})
