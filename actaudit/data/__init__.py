"""Calibration data: files, user loaders and synthetic inputs, streamed batch by batch.

:mod:`.batches` says what a batch is and re-cuts streams of them, :mod:`.arrays` streams
``.npy`` / ``.npz`` files and in-memory arrays, :mod:`.sources` picks a reader for a file
or a loader, :mod:`.synthetic` draws random inputs, :mod:`.binding` matches a batch to a
model's inputs. Nothing here imports torch; ``.pt`` files are read by the torch backend.
"""

from __future__ import annotations

from .arrays import ROW_BLOCK_BYTES, RowSource, from_arrays
from .batches import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_SEED,
    DEFAULT_SYNTHETIC_SAMPLES,
    Batch,
    DataSource,
    InputSpec,
    batch_samples,
    cap_samples,
    declared_fixed_batch,
    leading_dim,
    normalize_batch,
    rechunk,
)
from .sources import from_loader, import_callable, load_calib_file
from .synthetic import parse_input_shapes, split_input_dtypes, synthetic

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_SEED",
    "DEFAULT_SYNTHETIC_SAMPLES",
    "ROW_BLOCK_BYTES",
    "Batch",
    "DataSource",
    "InputSpec",
    "RowSource",
    "batch_samples",
    "cap_samples",
    "declared_fixed_batch",
    "from_arrays",
    "from_loader",
    "import_callable",
    "leading_dim",
    "load_calib_file",
    "normalize_batch",
    "parse_input_shapes",
    "rechunk",
    "split_input_dtypes",
    "synthetic",
]
