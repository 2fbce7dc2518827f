"""The calibration data of an audit: from a file, a loader, memory or synthetic inputs, with hints on mistakes."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .backends.base import CALIB_READERS
from .data import (
    DEFAULT_SYNTHETIC_SAMPLES,
    Batch,
    DataSource,
    InputSpec,
    from_arrays,
    from_loader,
    load_calib_file,
    normalize_batch,
    parse_input_shapes,
    synthetic,
)
from .errors import InputError
from .loading import LoadedModel
from .options import AuditOptions


def data_source(data: object, model: LoadedModel, opts: AuditOptions) -> DataSource:
    """The batches to calibrate on, with ``opts.input_fn`` applied to every item when given."""
    source = _data_source(data, model, opts)
    fn = opts.input_fn
    if fn is None:
        return source
    inner = source.batches

    def mapped() -> Iterator[Batch]:
        for args, kwargs in inner():
            raw = (
                kwargs if kwargs and not args else (args[0] if len(args) == 1 and not kwargs else tuple(args))
            )
            yield normalize_batch(fn(raw))

    return DataSource(
        mapped, source.description + " (through input_fn)", source.synthetic, source.total_samples
    )


_LABELS_HINT = (
    "if the data yields (inputs, labels) pairs, pass input_fn=lambda batch: batch[0] "
    "; with the CLI, write a --data-loader function that yields the inputs only"
)


def labels_hint(e: InputError, data: object, opts: AuditOptions) -> InputError:
    """The model rejected a batch of several positional values: likely labels passed to ``forward``."""
    text = e.message.lower()
    iterable = data is not None and not isinstance(data, (str, os.PathLike, np.ndarray, dict))
    loader = iterable or opts.data_loader is not None
    if (
        loader
        and opts.input_fn is None
        and e.hint is None
        and ("positional" in text or "argument" in text or "inputs but the model takes" in text)
    ):
        e.hint = _LABELS_HINT
    return e


def _data_source(data: object, model: LoadedModel, opts: AuditOptions) -> DataSource:
    given = [x is not None for x in (data, opts.calib, opts.data_loader)]
    if sum(given) > 1:
        raise InputError("give one of --calib, --data-loader (or the data argument), not several")
    if opts.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {opts.batch_size}")
    if opts.samples is not None and opts.samples < 1:
        raise InputError(f"--samples must be at least 1, got {opts.samples}")
    if model.fmt == "transformers":
        from .data.text import without_padding

        return without_padding(_plain_source(data, model, opts), opts.batch_size)
    return _plain_source(data, model, opts)


def _plain_source(
    data: Any,  # a torch tensor is told by its type name, torch not imported here
    model: LoadedModel,
    opts: AuditOptions,
) -> DataSource:
    if opts.calib is not None:
        return calib_file(opts.calib, model, opts)
    if opts.data_loader is not None:
        return from_loader(opts.data_loader)
    if data is None:
        from dataclasses import replace

        from .data import split_input_dtypes

        plain, dtypes = split_input_dtypes(opts.input_shapes)
        shapes = parse_input_shapes(plain)
        _check_batch_axis(shapes, model.inputs)
        specs = [
            replace(s, dtype=dtypes.get(s.name) or (dtypes.get(None) if i == 0 else None) or s.dtype)
            for i, s in enumerate(model.inputs)
        ]
        return synthetic(
            specs,
            shapes,
            samples=opts.samples or DEFAULT_SYNTHETIC_SAMPLES,
            batch_size=opts.batch_size,
            seed=opts.seed,
            val_range=opts.val_range,
        )
    if isinstance(data, (str, os.PathLike)):
        return calib_file(data, model, opts)
    if isinstance(data, np.ndarray) or type(data).__name__ == "Tensor":
        return from_arrays([data], opts.batch_size, f"in-memory {type(data).__name__} {tuple(data.shape)}")
    if isinstance(data, dict):
        return from_arrays(data, opts.batch_size, "in-memory arrays " + ", ".join(map(str, data)))
    if hasattr(data, "__iter__"):
        items = data
        return DataSource(
            lambda: (normalize_batch(b) for b in items), f"in-memory {type(data).__name__} of batches"
        )
    raise InputError(f"cannot use a {type(data).__name__} as calibration data")


def calib_file(path: str | os.PathLike[str], model: LoadedModel, opts: AuditOptions) -> DataSource:
    """Arrays (.npy, .npz, .pt), or the files people have: text, images, WAV audio (:mod:`.data.files`)."""
    from .data.files import file_source, kind_of
    from .data.streams import FileSettings

    kind = kind_of(path)
    if kind is None:
        return load_calib_file(path, opts.batch_size, CALIB_READERS)
    folder = Path(model.path) if model.path is not None and Path(model.path).is_dir() else None
    settings = FileSettings(
        batch_size=opts.batch_size,
        max_length=opts.max_length,
        resize=opts.resize,
        normalize=opts.normalize,
        channels_last=opts.channels_last,
        model_folder=folder,
        tokenizer=opts.tokenizer,
        resample=not opts.no_resample,
    )
    return file_source(path, kind, settings)


def _check_batch_axis(shapes: dict[str | None, tuple[int, ...]], inputs: list[InputSpec]) -> None:
    """``--input-shape 3x16x16`` for a model declaring ``?x3x16x16``: say so before a confusing run."""
    from .hints import batch_axis_hint

    for name, shape in shapes.items():
        spec = next((s for s in inputs if s.name == name), inputs[0] if len(inputs) == 1 else None)
        if spec is None or spec.shape is None:
            continue
        fix = batch_axis_hint(shape, spec.shape)
        if fix:
            typed = "x".join(map(str, shape))
            raise InputError(
                f"--input-shape {(name + '=') if name else ''}{typed}: input {spec.name!r} has "
                f"{len(spec.shape)} axes ({_dims(spec.shape)}) but {typed} gives {len(shape)}",
                hint=fix,
            )


def _dims(shape: Sequence[int | None]) -> str:
    return "x".join("?" if d is None else str(d) for d in shape)


def synthetic_hint(e: InputError, opts: AuditOptions) -> InputError:
    """A model that raised on synthetic data before any activation: the shape typed is the likely cause."""
    if opts.input_shapes and e.hint is None and "before any activation" in e.message:
        typed = ", ".join(opts.input_shapes)
        e.hint = (
            f"--input-shape {typed}: the leading dim is the batch axis, replaced by --batch-size; "
            f"for one sample of that shape write 1x{typed.split('=')[-1]}"
        )
    return e
