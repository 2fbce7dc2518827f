"""Calibration data: files, user loaders and synthetic inputs, streamed batch by batch.

A batch is ``(args, kwargs)``: positional and keyword inputs, each a NumPy array or
(from ``.pt`` files and loaders) a torch tensor. Backends convert. Nothing here
imports torch; ``.pt`` files are read by the torch backend.

``.npy`` files are memory-mapped and ``.npz`` members stored without compression are
too, so a calibration set larger than memory streams; compressed members are inflated
batch by batch, and Fortran-order arrays are copied out in blocks of rows.
"""

from __future__ import annotations

import importlib.util
import mmap
import os
import re
import sys
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .detect import check_readable
from .errors import CalibrationError, InputError

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


def _open_npy(path: Path) -> np.ndarray:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as e:
        raise CalibrationError(f"calibration file {path} is not a plain .npy array: {e}") from None
    except Exception as e:
        raise CalibrationError(f"cannot read calibration file {path}: {e}") from None
    return arr


def _npz_members(path: Path) -> dict[str, Any]:
    """Arrays of an .npz; members stored uncompressed are memory-mapped, compressed ones streamed.

    A compressed member in Fortran order cannot be streamed: it is read whole when it
    fits the memory budget and refused otherwise.
    """
    out: dict[str, Any] = {}
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise CalibrationError(f"calibration file {path} is not a valid .npz (zip) archive") from None
    with zf:
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                continue
            name = info.filename[: -len(".npy")]
            if info.compress_type == zipfile.ZIP_STORED:
                out[name] = _memmap_member(path, zf, info)
            else:
                out[name] = _compressed_member(path, zf, info)
    if not out:
        raise CalibrationError(f"calibration file {path} holds no arrays")
    return out


def _memmap_member(path: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    with zf.open(info) as f:
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        except ValueError as e:
            raise CalibrationError(f"{path}: member {info.filename!r} is not a plain array: {e}") from None
        header_len = f.tell()
    if dtype.hasobject:
        raise CalibrationError(f"{path}: member {info.filename!r} holds Python objects, which are not loaded")
    # The member's data start after the zip local header (30 bytes + name + extra).
    with open(path, "rb") as raw:
        raw.seek(info.header_offset + 26)
        name_len, extra_len = np.frombuffer(raw.read(4), dtype="<u2")
    start = info.header_offset + 30 + int(name_len) + int(extra_len) + header_len
    if int(np.prod(shape)) == 0:
        return np.zeros(shape, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=start, shape=shape, order="F" if fortran else "C")


# Memory a calibration file may take beyond one batch: a Fortran-order block, or a
# compressed member that cannot be streamed and is read whole.
ROW_BLOCK_BYTES = 64 << 20


class RowSource:
    """An array-like read in row order by :func:`_rows`: ``shape``, ``dtype`` and ``rows(start, stop)``."""

    shape: tuple[int, ...]
    dtype: np.dtype[Any]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def rows(self, start: int, stop: int) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        a = self.rows(0, self.shape[0])
        return a if dtype is None else a.astype(dtype)


class _StreamedMember(RowSource):
    """A compressed, C-ordered ``.npz`` member decompressed in order, batch by batch.

    Only the rows asked for are inflated (``--samples 64`` of a 3 GiB member reads 64
    rows); asking for earlier rows again (another pass) reopens the stream.
    """

    def __init__(
        self, path: Path, info: zipfile.ZipInfo, shape: tuple[int, ...], dtype: np.dtype[Any]
    ) -> None:
        self.path, self.info, self.shape, self.dtype = path, info, shape, dtype
        self.row_bytes = dtype.itemsize * int(np.prod(shape[1:], dtype=np.int64))
        self._zf: zipfile.ZipFile | None = None
        self._f: Any = None
        self._pos = 0

    def _reopen(self) -> None:
        self.close()
        self._zf = zipfile.ZipFile(self.path)
        self._f = self._zf.open(self.info)
        version = np.lib.format.read_magic(self._f)
        if version == (1, 0):
            np.lib.format.read_array_header_1_0(self._f)
        else:
            np.lib.format.read_array_header_2_0(self._f)
        self._pos = 0

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
        if self._zf is not None:
            self._zf.close()
        self._f = self._zf = None

    def _read(self, n: int) -> bytes:
        assert self._f is not None
        try:
            data: bytes = self._f.read(n)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
            raise CalibrationError(
                f"{self.path}: member {self.info.filename!r} cannot be inflated: {e}"
            ) from None
        if len(data) != n:
            raise CalibrationError(
                f"{self.path}: member {self.info.filename!r} ended early: its header promises {self.shape[0]} rows"
            )
        return data

    def rows(self, start: int, stop: int) -> np.ndarray:
        stop = min(stop, self.shape[0])
        if self._f is None or start < self._pos:
            self._reopen()
        while self._pos < start:  # skip forward in bounded steps
            step = min(start - self._pos, max(1, ROW_BLOCK_BYTES // max(self.row_bytes, 1)))
            self._read(step * self.row_bytes)
            self._pos += step
        data = self._read((stop - start) * self.row_bytes)
        self._pos = stop
        return np.frombuffer(data, dtype=self.dtype).reshape((stop - start, *self.shape[1:])).copy()


class _FortranBlocks(RowSource):
    """A Fortran-ordered memory-mapped array copied out in blocks of rows.

    Rows of a Fortran-order array are strided across the whole file, so slicing the
    mapping touches (and keeps resident) nearly every page for each batch. Here a block
    of about ``ROW_BLOCK_BYTES / 2`` of rows is copied out a few columns at a time (a
    column of the ``[N, rest]`` view is contiguous in the file), and the mapping's
    pages are dropped after each group of columns (``MADV_DONTNEED``; the page cache
    keeps the data), so resident memory stays near one block whatever the file size.
    """

    _SPAN = 16 << 20  # bytes of the file touched between two page drops

    def __init__(self, a: np.ndarray) -> None:
        self.a, self.shape, self.dtype = a, tuple(a.shape), a.dtype
        self.cols = int(np.prod(a.shape[1:], dtype=np.int64))
        row_bytes = a.dtype.itemsize * self.cols
        self.block = max(1, ROW_BLOCK_BYTES // 2 // max(row_bytes, 1))
        self._start, self._cache = -1, np.empty(0)

    def _drop_pages(self) -> None:
        mm = getattr(self.a, "_mmap", None)
        if mm is not None and hasattr(mm, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
            mm.madvise(mmap.MADV_DONTNEED)

    def _copy(self, start: int, end: int) -> np.ndarray:
        n = self.shape[0]
        flat = self.a.reshape((n, self.cols), order="F")  # a view: columns are contiguous runs
        out = np.empty((end - start, self.cols), dtype=self.dtype)
        step = max(1, self._SPAN // max(n * self.dtype.itemsize, 1))
        for j in range(0, self.cols, step):
            out[:, j : j + step] = flat[start:end, j : j + step]
            self._drop_pages()
        # out[r, j] holds element (r, *unravel(j, order="F")): read it back in that order
        return np.ascontiguousarray(out.reshape((end - start, *self.shape[1:]), order="F"))

    def rows(self, start: int, stop: int) -> np.ndarray:
        stop = min(stop, self.shape[0])
        if not (self._start <= start and stop <= self._start + len(self._cache)):
            end = min(self.shape[0], max(stop, start + self.block))
            self._cache = np.empty(0)  # free the old block before the new one is made
            self._cache = self._copy(start, end)
            self._start = start
        return self._cache[start - self._start : stop - self._start].copy()


def _compressed_member(path: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray | RowSource:
    with zf.open(info) as f:
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        except ValueError as e:
            raise CalibrationError(f"{path}: member {info.filename!r} is not a plain array: {e}") from None
    if dtype.hasobject:
        raise CalibrationError(f"{path}: member {info.filename!r} holds Python objects, which are not loaded")
    if len(shape) == 0 or int(np.prod(shape)) == 0:
        return np.zeros(shape, dtype=dtype)
    if not fortran or len(shape) == 1:
        return _StreamedMember(path, info, tuple(shape), dtype)
    nbytes = dtype.itemsize * int(np.prod(shape, dtype=np.int64))
    budget = min(ROW_BLOCK_BYTES * 4, _available_memory() // 4)
    if nbytes > budget:
        raise CalibrationError(
            f"{path}: member {info.filename!r} is compressed and in Fortran order, so its rows cannot be "
            f"streamed, and it would inflate to {nbytes / 2**20:.0f} MiB, over the {budget / 2**20:.0f} MiB budget",
            hint="save it uncompressed (np.savez) or in C order (np.ascontiguousarray before np.savez_compressed)",
        )
    with zf.open(info) as f:
        return np.lib.format.read_array(f, allow_pickle=False)


def _rows(a: np.ndarray | RowSource, start: int, stop: int) -> np.ndarray:
    """Rows ``[start, stop)`` as a fresh array.

    A C-ordered memory-mapped file is read with ``pread`` rather than through the mapping:
    pages touched through a mapping stay in the process's resident set until the mapping
    closes, so memory would grow with the calibration set.
    """
    if isinstance(a, RowSource):
        return a.rows(start, stop)
    filename = getattr(a, "filename", None)
    if isinstance(a, np.memmap) and filename and a.flags.c_contiguous and a.ndim >= 1:
        row = a.itemsize * int(np.prod(a.shape[1:], dtype=np.int64))
        stop = min(stop, a.shape[0])
        out = np.empty((stop - start, *a.shape[1:]), dtype=a.dtype)
        if out.nbytes:
            fd = os.open(filename, os.O_RDONLY)
            try:
                view = out.reshape(-1).view(np.uint8).data
                pos, done = int(a.offset) + start * row, 0
                while done < out.nbytes:
                    got = os.preadv(fd, [view[done:]], pos + done)
                    if got <= 0:
                        raise CalibrationError(f"calibration file {filename} ended early (truncated?)")
                    done += got
            finally:
                os.close(fd)
        return out
    return np.ascontiguousarray(a[start:stop])


def _array_batches(arrays: list[np.ndarray], names: list[str] | None, batch_size: int) -> Iterator[Batch]:
    n = leading_dim(arrays[0])
    for start in range(0, n, batch_size):
        chunk = [_rows(a, start, start + batch_size) for a in arrays]
        if names is None:
            yield chunk, {}
        else:
            yield [], dict(zip(names, chunk, strict=True))


def from_arrays(
    arrays: dict[str, np.ndarray] | list[np.ndarray], batch_size: int, description: str
) -> DataSource:
    if isinstance(arrays, dict):
        names: list[str] | None = list(arrays)
        arrs = list(arrays.values())
    else:
        names, arrs = None, list(arrays)
    if not arrs:
        raise CalibrationError(f"{description}: no arrays")
    counts = {leading_dim(a) for a in arrs}
    if len(counts) != 1:
        raise CalibrationError(
            f"{description}: arrays disagree on the number of samples (axis 0): {sorted(counts)}"
        )
    total = counts.pop()
    if total == 0:
        raise CalibrationError(f"{description}: zero samples")
    return DataSource(lambda: _array_batches(arrs, names, batch_size), description, total_samples=total)


def _blocked(a: Any) -> Any:
    """A Fortran-ordered memory map wrapped to be read in row blocks; anything else as it is."""
    if isinstance(a, np.memmap) and a.ndim >= 2 and a.flags.f_contiguous and not a.flags.c_contiguous:
        return _FortranBlocks(a)
    return a


def load_calib_file(path: str | os.PathLike[str], batch_size: int) -> DataSource:
    p = Path(path)
    check_readable(p, "calibration file")
    suffix = p.suffix.lower()
    if suffix == ".npy":
        arr = _open_npy(p)
        if arr.ndim == 0:
            raise CalibrationError(f"calibration file {p} holds a scalar; samples go along axis 0")
        src = from_arrays([_blocked(arr)], batch_size, str(p))
        src.details = {"shape": list(arr.shape), "dtype": str(arr.dtype)}
        return src
    if suffix == ".npz":
        members = _npz_members(p)
        src = from_arrays({k: _blocked(v) for k, v in members.items()}, batch_size, str(p))
        src.details = {
            "arrays": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in members.items()}
        }
        return src
    if suffix in (".pt", ".pth"):
        from .backends.torch.data import load_pt_batches

        return load_pt_batches(p)
    raise InputError(f"calibration file {p} has an unknown type {suffix!r}", hint="use .npy, .npz or .pt")


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


def _available_memory() -> int:
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 1 << 34


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
    # (name, shape, dtype, batched)
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
    per_batch = sum(
        int(np.prod(s[1:] if b else s)) * (batch_size if b else 1) * np.dtype(d).itemsize
        for _, s, d, b in resolved
    )
    if per_batch > _available_memory() // 4:
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
