"""The external-data files an ONNX model names, read from its bytes without onnx or onnxruntime.

A command's inputs include every file the loader will read, and an ONNX model's weights may
lie in other files beside it (``TensorProto.external_data``, key ``location``). This module
walks the protobuf wire format of a ``ModelProto`` just far enough to find those tensors (the
initializers, sparse initializers and attribute tensors of the main graph, of every subgraph
and of every local function), skipping every other field by its length, so listing them costs
a few reads even for a large model and imports nothing heavy. Only locations the loader could
follow inside the model's folder are listed: an absolute location or one with a ``..`` part
is never resolved here (the loader refuses it). A file that is not a well-formed ``ModelProto``
yields what was found before the damage: the loader reports the damage itself.
"""

from __future__ import annotations

import contextlib
import mmap
import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath

_MAX_DEPTH = 64  # nested graphs (If/Loop bodies) followed; a deeper file is the loader's to refuse
_MAX_FILES = 10_000  # distinct locations listed; a model naming more is refused by the loader anyway

# Field numbers (onnx.proto3).
_MODEL_GRAPH, _MODEL_FUNCTIONS = 7, 25
_GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_SPARSE = 1, 5, 15
_FUNCTION_NODE = 7
_NODE_ATTRIBUTE = 5
_ATTR_T, _ATTR_G, _ATTR_TENSORS, _ATTR_GRAPHS, _ATTR_SPARSE, _ATTR_SPARSES = 5, 6, 10, 11, 22, 23
_SPARSE_VALUES, _SPARSE_INDICES = 1, 2
_TENSOR_EXTERNAL, _TENSOR_LOCATION = 13, 14
_ENTRY_KEY, _ENTRY_VALUE = 1, 2
_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL


class _Malformed(Exception):
    pass


def _varint(buf: memoryview | mmap.mmap, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise _Malformed
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def _fields(buf: memoryview | mmap.mmap, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """``(field, wire type, start, end)`` of each field of the message in ``buf[start:end]``.

    For a length-delimited field, start/end bound its payload; for a varint, start is the value.
    """
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos, end)
            yield field, wire, value, pos
        elif wire == 1:
            pos += 8
        elif wire == 2:
            n, pos = _varint(buf, pos, end)
            if pos + n > end:
                raise _Malformed
            yield field, wire, pos, pos + n
            pos += n
        elif wire == 5:
            pos += 4
        else:  # groups (3, 4) and unknown wire types: not in onnx.proto
            raise _Malformed
    if pos != end:
        raise _Malformed


def _sub(
    buf: memoryview | mmap.mmap, start: int, end: int, wanted: set[int]
) -> Iterator[tuple[int, int, int]]:
    for field, wire, s, e in _fields(buf, start, end):
        if wire == 2 and field in wanted:
            yield field, s, e


def _tensor_location(buf: memoryview | mmap.mmap, start: int, end: int) -> str | None:
    external, location = False, None
    for field, wire, s, e in _fields(buf, start, end):
        if field == _TENSOR_LOCATION and wire == 0:
            external = s == _EXTERNAL
        elif field == _TENSOR_EXTERNAL and wire == 2:
            entry = {f: bytes(buf[a:b]) for f, w, a, b in _fields(buf, s, e) if w == 2}
            if entry.get(_ENTRY_KEY) == b"location":
                location = entry.get(_ENTRY_VALUE, b"").decode("utf-8", "replace")
    return location if external else None


class _Walk:
    def __init__(self, buf: memoryview | mmap.mmap) -> None:
        self.buf = buf
        self.locations: dict[str, None] = {}

    def tensor(self, s: int, e: int) -> None:
        loc = _tensor_location(self.buf, s, e)
        if loc is not None and len(self.locations) < _MAX_FILES:
            self.locations[loc] = None

    def sparse(self, s: int, e: int) -> None:
        for _, a, b in _sub(self.buf, s, e, {_SPARSE_VALUES, _SPARSE_INDICES}):
            self.tensor(a, b)

    def nodes(self, s: int, e: int, depth: int) -> None:
        for _, a, b in _sub(self.buf, s, e, {_NODE_ATTRIBUTE}):
            for field, c, d in _sub(
                self.buf, a, b, {_ATTR_T, _ATTR_TENSORS, _ATTR_G, _ATTR_GRAPHS, _ATTR_SPARSE, _ATTR_SPARSES}
            ):
                if field in (_ATTR_T, _ATTR_TENSORS):
                    self.tensor(c, d)
                elif field in (_ATTR_SPARSE, _ATTR_SPARSES):
                    self.sparse(c, d)
                else:
                    self.graph(c, d, depth + 1)

    def graph(self, s: int, e: int, depth: int) -> None:
        if depth > _MAX_DEPTH:
            raise _Malformed
        for field, a, b in _sub(self.buf, s, e, {_GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_SPARSE}):
            if field == _GRAPH_INITIALIZER:
                self.tensor(a, b)
            elif field == _GRAPH_SPARSE:
                self.sparse(a, b)
            else:
                self.nodes(a, b, depth)

    def model(self, end: int) -> None:
        for field, a, b in _sub(self.buf, 0, end, {_MODEL_GRAPH, _MODEL_FUNCTIONS}):
            if field == _MODEL_GRAPH:
                self.graph(a, b, 0)
            else:
                for _, c, d in _sub(self.buf, a, b, {_FUNCTION_NODE}):
                    self.nodes(c, d, 0)


def external_locations(path: str | os.PathLike[str]) -> list[str]:
    """The ``location`` strings of the model's external tensors, in file order, each once."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            return []
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            walk = _Walk(mm)
            with contextlib.suppress(_Malformed, IndexError, RecursionError):
                walk.model(size)
            return list(walk.locations)


def safe_location(base: Path, location: str) -> Path | None:
    """``base / location`` when the location stays inside ``base`` by its spelling; else None."""
    if not location or "\x00" in location:
        return None
    for pure in (PurePosixPath(location), PureWindowsPath(location)):
        if pure.is_absolute() or pure.anchor or ".." in pure.parts:
            return None
    return base / location


def external_data_files(model: str | os.PathLike[str]) -> list[Path]:
    """The external-data files of the ONNX model at ``model`` that exist, inside its folder."""
    p = Path(model)
    try:
        locations = external_locations(p)
    except (OSError, ValueError):
        return []
    base = p.parent
    out = []
    for loc in locations:
        f = safe_location(base, loc)
        if f is not None and f.exists():
            out.append(f)
    return out
