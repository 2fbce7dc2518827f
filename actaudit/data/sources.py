"""Where calibration data comes from: a file (by suffix), or a user's loader function."""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..detect import check_readable
from ..errors import CalibrationError, InputError
from .arrays import blocked, from_arrays, npz_members, open_npy
from .batches import Batch, DataSource, normalize_batch

# Readers for suffixes this package cannot read itself (``.pt``: the torch backend's).
Reader = Callable[[Path], DataSource]


def load_calib_file(
    path: str | os.PathLike[str], batch_size: int, readers: Mapping[str, Reader] | None = None
) -> DataSource:
    """A ``.npy`` / ``.npz`` file, or a suffix one of ``readers`` reads (the backends' registry has them)."""
    p = Path(path)
    check_readable(p, "calibration file")
    suffix = p.suffix.lower()
    if suffix == ".npy":
        arr = open_npy(p)
        if arr.ndim == 0:
            raise CalibrationError(f"calibration file {p} holds a scalar; samples go along axis 0")
        src = from_arrays([blocked(arr)], batch_size, str(p))
        src.details = {"shape": list(arr.shape), "dtype": str(arr.dtype)}
        return src
    if suffix == ".npz":
        members = npz_members(p)
        src = from_arrays({k: blocked(v) for k, v in members.items()}, batch_size, str(p))
        src.details = {
            "arrays": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in members.items()}
        }
        return src
    reader = (readers or {}).get(suffix)
    if reader is not None:
        return reader(p)
    raise InputError(
        f"calibration file {p} has an unknown type {suffix!r}",
        hint="use .npy, .npz, .pt, a .txt/.jsonl of prompts, PNG/JPEG images or WAV files (a file, "
        "folder or glob), or --data-loader FILE.py:FUNCTION for anything else",
    )


@contextmanager
def cwd_importable() -> Iterator[None]:
    """The current folder on ``sys.path`` for the block, as ``python -m actaudit`` has it.

    The ``actaudit`` console script starts with its own folder there instead: a user's
    ``--arch mynet:build`` or a pickled ``mynet.Net`` would not import from the project
    they run it in.
    """
    cwd = os.getcwd()
    if "" in sys.path or cwd in sys.path:
        yield
        return
    sys.path.insert(0, cwd)
    try:
        yield
    finally:
        if cwd in sys.path:
            sys.path.remove(cwd)


def import_callable(spec: str, what: str) -> Callable[..., Any]:
    """``MODULE:NAME`` or ``path/to/file.py:NAME``. Runs the user's code by design."""
    if ":" not in spec:
        raise InputError(f"{what} {spec!r} is not MODULE:CALLABLE or FILE.py:CALLABLE")
    mod_part, _, attr = spec.rpartition(":")
    if not attr.isidentifier():
        raise InputError(f"{what} {spec!r}: {attr!r} is not a Python name")
    try:
        if mod_part.endswith(".py") or os.sep in mod_part:
            file = Path(mod_part)
            check_readable(file, what)
            mod_name = "_actaudit_user_" + re.sub(r"\W", "_", file.stem)
            spec_obj = importlib.util.spec_from_file_location(mod_name, file)
            if spec_obj is None or spec_obj.loader is None:
                raise InputError(f"{what}: cannot import {file}")
            module = importlib.util.module_from_spec(spec_obj)
            sys.modules[mod_name] = module
            sys.path.insert(0, str(file.parent.resolve()))
            try:
                spec_obj.loader.exec_module(module)
            finally:
                sys.path.remove(str(file.parent.resolve()))
        else:
            with cwd_importable():
                module = importlib.import_module(mod_part)
    except InputError:
        raise
    except Exception as e:
        raise InputError(f"{what} {spec!r}: importing {mod_part} raised {type(e).__name__}: {e}") from None
    fn = getattr(module, attr, None)
    if fn is None or not callable(fn):
        raise InputError(f"{what} {spec!r}: {mod_part} has no callable {attr!r}")
    return fn  # type: ignore[no-any-return,unused-ignore]


def from_loader(spec: str) -> DataSource:
    fn = import_callable(spec, "--data-loader")

    def batches() -> Iterator[Batch]:
        try:
            items = fn()
        except Exception as e:
            raise CalibrationError(
                f"--data-loader {spec}: calling it raised {type(e).__name__}: {e}"
            ) from None
        if items is None or not hasattr(items, "__iter__"):
            raise CalibrationError(
                f"--data-loader {spec} returned {type(items).__name__}, not an iterable of batches"
            )
        for item in items:
            yield normalize_batch(item)

    return DataSource(batches, f"--data-loader {spec}")
