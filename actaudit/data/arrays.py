"""Calibration arrays from ``.npy`` / ``.npz`` files and memory, streamed batch by batch.

``.npy`` files are memory-mapped and ``.npz`` members stored without compression are
too, so a calibration set larger than memory streams; compressed members are inflated
batch by batch, and Fortran-order arrays are copied out in blocks of rows.
"""

from __future__ import annotations

import math
import mmap
import os
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
from numpy.typing import DTypeLike

from ..errors import CalibrationError
from .batches import Batch, DataSource, leading_dim


def available_memory() -> int:
    """Bytes of memory free now (16 GiB when the system does not say)."""
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 1 << 34


def batch_budget() -> int:
    """Bytes one batch of an inflated member may take: a quarter of free memory and of the address-space limit."""
    budget = available_memory() // 4
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft != resource.RLIM_INFINITY:
            budget = min(budget, soft // 4)
    except (ImportError, OSError, ValueError):
        pass
    return max(budget, 1 << 20)


def _npy_declared(path: Path) -> None:
    """The header's shape × dtype must fit the file: checked with Python integers before mapping it."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            held = os.fstat(f.fileno()).st_size - f.tell()
    except (ValueError, OSError, EOFError) as e:
        raise CalibrationError(f"calibration file {path} is not a plain .npy array: {e}") from None
    if dtype.hasobject:
        return  # refused by np.load(allow_pickle=False) with its own message
    nbytes = dtype.itemsize * math.prod(shape)
    if nbytes > held:
        raise CalibrationError(
            f"calibration file {path} declares shape {tuple(shape)} {dtype} ({nbytes} bytes) but holds "
            f"{max(held, 0)} bytes (truncated or altered?)",
            hint="write the file again with np.save",
        )


def open_npy(path: Path) -> np.ndarray:
    _npy_declared(path)
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as e:
        raise CalibrationError(f"calibration file {path} is not a plain .npy array: {e}") from None
    except Exception as e:
        raise CalibrationError(f"cannot read calibration file {path}: {e}") from None
    return arr


def npz_members(path: Path) -> dict[str, np.ndarray | RowSource]:
    """Arrays of an .npz; members stored uncompressed are memory-mapped, compressed ones streamed.

    A compressed member in Fortran order cannot be streamed: it is read whole when it
    fits the memory budget and refused otherwise.
    """
    out: dict[str, np.ndarray | RowSource] = {}
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError):
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


def _member_header(
    path: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo
) -> tuple[tuple[int, ...], bool, np.dtype[Any], int]:
    """An ``.npz`` member's shape, Fortran order, dtype and header length (in the uncompressed member)."""
    try:
        with zf.open(info) as f:
            try:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
                else:
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            except ValueError as e:
                raise CalibrationError(
                    f"{path}: member {info.filename!r} is not a plain array: {e}"
                ) from None
            header_len = f.tell()
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error, NotImplementedError) as e:
        raise CalibrationError(f"{path}: member {info.filename!r} cannot be read (truncated?): {e}") from None
    if dtype.hasobject:
        raise CalibrationError(f"{path}: member {info.filename!r} holds Python objects, which are not loaded")
    _check_declared(path, info, tuple(shape), dtype, header_len)
    return shape, fortran, dtype, header_len


def _check_declared(
    path: Path, info: zipfile.ZipInfo, shape: tuple[int, ...], dtype: np.dtype[Any], header_len: int
) -> None:
    """The header's shape × dtype must fit the bytes the zip directory says the member holds.

    Computed with Python integers (a hostile shape overflows int64), before any data is read:
    a member that claims more rows than it holds is refused here, not met as a short read or
    a mapping past the end of the file.
    """
    nbytes = dtype.itemsize * math.prod(shape)
    held = info.file_size - header_len
    if nbytes > held:
        raise CalibrationError(
            f"{path}: member {info.filename!r} declares shape {shape} {dtype} ({nbytes} bytes) but holds "
            f"{max(held, 0)} bytes (truncated or altered?)",
            hint="write the file again with np.savez / np.savez_compressed",
        )


def _memmap_member(path: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    shape, fortran, dtype, header_len = _member_header(path, zf, info)
    # The member's data start after the zip local header (30 bytes + name + extra).
    with open(path, "rb") as raw:
        raw.seek(info.header_offset + 26)
        name_len, extra_len = np.frombuffer(raw.read(4), dtype="<u2")
    start = info.header_offset + 30 + int(name_len) + int(extra_len) + header_len
    if math.prod(shape) == 0:
        return np.zeros(shape, dtype=dtype)
    nbytes = dtype.itemsize * math.prod(shape)
    size = path.stat().st_size
    if start + nbytes > size:
        raise CalibrationError(
            f"{path}: member {info.filename!r} declares {nbytes} bytes of data but the file ends "
            f"{max(size - start, 0)} bytes after its start (truncated?)"
        )
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

    def __array__(self, dtype: DTypeLike | None = None, copy: bool | None = None) -> np.ndarray:
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
        self.row_bytes = dtype.itemsize * math.prod(shape[1:])
        self._zf: zipfile.ZipFile | None = None
        self._f: IO[bytes] | None = None
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
        want = (stop - start) * self.row_bytes
        budget = batch_budget()
        if want > budget:
            raise CalibrationError(
                f"{self.path}: member {self.info.filename!r} has rows of {self.row_bytes / 2**20:.1f} MiB: "
                f"{stop - start} of them would inflate to {want / 2**20:.0f} MiB, over the "
                f"{budget / 2**20:.0f} MiB a batch may take",
                hint="lower --batch-size, or check that the array's axis 0 holds the samples",
            )
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
    shape, fortran, dtype, _ = _member_header(path, zf, info)
    if len(shape) == 0 or math.prod(shape) == 0:
        return np.zeros(shape, dtype=dtype)
    if not fortran or len(shape) == 1:
        return _StreamedMember(path, info, tuple(shape), dtype)
    nbytes = dtype.itemsize * math.prod(shape)
    budget = min(ROW_BLOCK_BYTES * 4, batch_budget())
    if nbytes > budget:
        raise CalibrationError(
            f"{path}: member {info.filename!r} is compressed and in Fortran order, so its rows cannot be "
            f"streamed, and it would inflate to {nbytes / 2**20:.0f} MiB, over the {budget / 2**20:.0f} MiB budget",
            hint="save it uncompressed (np.savez) or in C order (np.ascontiguousarray before np.savez_compressed)",
        )
    try:
        with zf.open(info) as f:
            return np.lib.format.read_array(f, allow_pickle=False)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, zlib.error) as e:
        raise CalibrationError(
            f"{path}: member {info.filename!r} cannot be inflated (truncated?): {e}"
        ) from None


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


def blocked(a: Any) -> Any:
    """A Fortran-ordered memory map wrapped to be read in row blocks; anything else as it is."""
    if isinstance(a, np.memmap) and a.ndim >= 2 and a.flags.f_contiguous and not a.flags.c_contiguous:
        return _FortranBlocks(a)
    return a
