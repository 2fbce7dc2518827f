"""ONNX's protobuf classes and the few helpers an audit needs, without running ``import onnx``.

``import onnx`` costs most of an ONNX audit's start-up (its helpers pull in ``ml_dtypes``),
yet an audit only reads a ``ModelProto``, appends nodes to it and infers shapes. This module
loads the installed onnx's own generated ``onnx_ml_pb2.py`` by file path (nothing is copied
into this tree) and its compiled extension under its real name, so neither is ever loaded
twice: the message classes are the ones ``onnx.ModelProto`` names (one descriptor pool), and
a later ``import onnx`` (rewrite, prune, the version converter) finds the extension already
loaded. Dtypes this module does not map (bfloat16, float8, strings, external data) are
handed to onnx itself, imported then.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

__all__ = [
    "AttributeProto",
    "GraphProto",
    "ModelProto",
    "NodeProto",
    "TensorProto",
    "TypeProto",
    "ValueInfoProto",
    "all_tensors",
    "from_array",
    "get_attribute_value",
    "infer_shapes",
    "load_bytes",
    "load_external",
    "make_node",
    "make_tensor",
    "make_tensor_value_info",
    "read_external",
    "tensor_dtype_to_np_dtype",
    "to_array",
]

_NATIVE = "onnx.onnx_cpp2py_export"


def _onnx_dir() -> str:
    spec = importlib.util.find_spec("onnx")  # finds the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the onnx package is not installed")
    return next(iter(spec.submodule_search_locations))


def _load_pb2() -> ModuleType:
    if "onnx" in sys.modules:
        return importlib.import_module("onnx.onnx_ml_pb2")
    path = os.path.join(_onnx_dir(), "onnx_ml_pb2.py")
    spec = importlib.util.spec_from_file_location("_actaudit_onnx_ml_pb2", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # registers onnx/onnx-ml.proto in the default pool
    return module


class _BindNative(importlib.abc.MetaPathFinder):
    """When onnx itself is imported later, its package gets the already loaded extension as an attribute."""

    def find_spec(
        self, name: str, path: Any = None, target: Any = None
    ) -> importlib.machinery.ModuleSpec | None:
        if name != "onnx":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        run = loader.exec_module

        def exec_module(module: ModuleType) -> None:  # the real import (find_spec alone imports nothing)
            if self in sys.meta_path:
                sys.meta_path.remove(self)
            module.onnx_cpp2py_export = sys.modules[_NATIVE]  # type: ignore[attr-defined]
            run(module)

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def _native() -> ModuleType:
    """onnx's compiled extension (shape inference), loaded once under its own name."""
    if _NATIVE in sys.modules:
        return sys.modules[_NATIVE]
    if "onnx" in sys.modules:
        return importlib.import_module(_NATIVE)
    folder = _onnx_dir()
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    names = sorted(
        f for f in os.listdir(folder) if f.startswith("onnx_cpp2py_export") and f.endswith(suffixes)
    )
    if not names:
        raise ImportError(f"onnx's compiled extension is not in {folder}")
    spec = importlib.util.spec_from_file_location(_NATIVE, os.path.join(folder, names[0]))
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {names[0]}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[_NATIVE] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[_NATIVE]
        raise
    sys.meta_path.insert(0, _BindNative())
    return module


if TYPE_CHECKING:
    from onnx import AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto, TypeProto, ValueInfoProto
else:
    _pb2 = _load_pb2()
    AttributeProto = _pb2.AttributeProto
    GraphProto = _pb2.GraphProto
    ModelProto = _pb2.ModelProto
    NodeProto = _pb2.NodeProto
    TensorProto = _pb2.TensorProto
    TypeProto = _pb2.TypeProto
    ValueInfoProto = _pb2.ValueInfoProto


def _onnx() -> Any:
    import onnx  # only for what this module does not map itself

    return onnx


# -- dtypes ----------------------------------------------------------------------------------
_NP: dict[int, np.dtype[Any]] = {
    TensorProto.FLOAT: np.dtype(np.float32),
    TensorProto.UINT8: np.dtype(np.uint8),
    TensorProto.INT8: np.dtype(np.int8),
    TensorProto.UINT16: np.dtype(np.uint16),
    TensorProto.INT16: np.dtype(np.int16),
    TensorProto.INT32: np.dtype(np.int32),
    TensorProto.INT64: np.dtype(np.int64),
    TensorProto.BOOL: np.dtype(np.bool_),
    TensorProto.FLOAT16: np.dtype(np.float16),
    TensorProto.DOUBLE: np.dtype(np.float64),
    TensorProto.UINT32: np.dtype(np.uint32),
    TensorProto.UINT64: np.dtype(np.uint64),
    TensorProto.COMPLEX64: np.dtype(np.complex64),
    TensorProto.COMPLEX128: np.dtype(np.complex128),
}
_ONNX_OF = {v: k for k, v in _NP.items()}


def tensor_dtype_to_np_dtype(data_type: int) -> np.dtype[Any]:
    found = _NP.get(int(data_type))
    return found if found is not None else _onnx().helper.tensor_dtype_to_np_dtype(data_type)


# -- tensors ---------------------------------------------------------------------------------
def to_array(t: Any) -> np.ndarray:
    """A tensor's values (as ``onnx.numpy_helper.to_array``); the dtypes onnx needs ml_dtypes for go to onnx."""
    dtype = _NP.get(t.data_type)
    if dtype is None or t.data_location == TensorProto.EXTERNAL or t.HasField("segment"):
        return np.asarray(_onnx().numpy_helper.to_array(t))
    dims = tuple(int(d) for d in t.dims)
    if t.HasField("raw_data"):
        return np.frombuffer(t.raw_data, dtype=dtype).reshape(dims)
    if t.data_type == TensorProto.FLOAT16:
        return np.asarray(t.int32_data, dtype=np.uint16).view(np.float16).reshape(dims)
    if t.data_type in (TensorProto.COMPLEX64, TensorProto.COMPLEX128):
        return np.asarray(_onnx().numpy_helper.to_array(t))
    field = {
        TensorProto.FLOAT: t.float_data,
        TensorProto.DOUBLE: t.double_data,
        TensorProto.INT64: t.int64_data,
        TensorProto.UINT32: t.uint64_data,
        TensorProto.UINT64: t.uint64_data,
    }.get(t.data_type, t.int32_data)
    return np.asarray(field, dtype=dtype).reshape(dims)


def from_array(arr: np.ndarray, name: str | None = None) -> Any:
    a = np.asarray(arr)
    data_type = _ONNX_OF.get(a.dtype.newbyteorder("=") if a.dtype.byteorder == ">" else a.dtype)
    if data_type is None or sys.byteorder != "little":
        return _onnx().numpy_helper.from_array(a, name)
    t = TensorProto()
    t.dims.extend(a.shape)
    if name:
        t.name = name
    t.data_type = data_type
    t.raw_data = np.ascontiguousarray(a).tobytes()
    return t


def make_tensor(name: str, data_type: int, dims: Sequence[int], vals: Any) -> Any:
    """A tensor of ``dims`` holding ``vals`` (raw bytes of the dtype)."""
    dtype = tensor_dtype_to_np_dtype(data_type)
    t = from_array(np.asarray(vals, dtype=dtype).reshape(tuple(dims)), name)
    t.data_type = data_type
    return t


def all_tensors(model: Any) -> Iterator[Any]:
    """Every tensor of ``model``: initializers and attribute tensors, subgraphs and functions included."""
    yield from _graph_tensors(model.graph)
    for f in model.functions:
        yield from _node_tensors(f.node)


def _graph_tensors(g: Any) -> Iterator[Any]:
    yield from g.initializer
    yield from _node_tensors(g.node)


def _node_tensors(nodes: Iterable[Any]) -> Iterator[Any]:
    for node in nodes:
        for a in node.attribute:
            if a.HasField("t"):
                yield a.t
            yield from a.tensors
            if a.HasField("g"):
                yield from _graph_tensors(a.g)
            for g in a.graphs:
                yield from _graph_tensors(g)


# -- nodes and values ------------------------------------------------------------------------
def make_attribute(key: str, value: Any) -> Any:
    a = AttributeProto()
    a.name = key
    if isinstance(value, (float, np.floating)):
        a.f, a.type = float(value), AttributeProto.FLOAT
    elif isinstance(value, (bool, int, np.integer)):
        a.i, a.type = int(value), AttributeProto.INT
    elif isinstance(value, (str, bytes)):
        a.s, a.type = value.encode() if isinstance(value, str) else value, AttributeProto.STRING
    elif isinstance(value, TensorProto):
        a.t.CopyFrom(value)
        a.type = AttributeProto.TENSOR
    elif isinstance(value, GraphProto):
        a.g.CopyFrom(value)
        a.type = AttributeProto.GRAPH
    else:
        items = list(value)
        if items and all(isinstance(v, (bool, int, np.integer)) for v in items):
            a.ints.extend(int(v) for v in items)
            a.type = AttributeProto.INTS
        elif items and all(isinstance(v, (float, int, np.floating, np.integer)) for v in items):
            a.floats.extend(float(v) for v in items)
            a.type = AttributeProto.FLOATS
        else:
            return _onnx().helper.make_attribute(key, value)
    return a


def make_node(
    op_type: str, inputs: Sequence[str], outputs: Sequence[str], name: str | None = None, **attrs: Any
) -> Any:
    node = NodeProto()
    node.op_type = op_type
    node.input.extend(inputs)
    node.output.extend(outputs)
    if name:
        node.name = name
    node.attribute.extend(make_attribute(k, v) for k, v in sorted(attrs.items()) if v is not None)
    return node


def make_tensor_value_info(name: str, elem_type: int, shape: Sequence[int | str | None] | None) -> Any:
    vi = ValueInfoProto()
    vi.name = name
    tt = vi.type.tensor_type
    tt.elem_type = elem_type
    if shape is not None:
        dims = tt.shape.dim
        tt.shape.SetInParent()
        for d in shape:
            dim = dims.add()
            if isinstance(d, (int, np.integer)):
                dim.dim_value = int(d)
            elif isinstance(d, str):
                dim.dim_param = d
    return vi


_ATTR_VALUE = {
    AttributeProto.FLOAT: "f",
    AttributeProto.INT: "i",
    AttributeProto.STRING: "s",
    AttributeProto.TENSOR: "t",
    AttributeProto.GRAPH: "g",
    AttributeProto.TYPE_PROTO: "tp",
    AttributeProto.SPARSE_TENSOR: "sparse_tensor",
    AttributeProto.FLOATS: "floats",
    AttributeProto.INTS: "ints",
    AttributeProto.STRINGS: "strings",
    AttributeProto.TENSORS: "tensors",
    AttributeProto.GRAPHS: "graphs",
    AttributeProto.SPARSE_TENSORS: "sparse_tensors",
    AttributeProto.TYPE_PROTOS: "type_protos",
}


def get_attribute_value(a: Any) -> Any:
    """An attribute's value (as ``onnx.helper.get_attribute_value``)."""
    field = _ATTR_VALUE.get(a.type)
    if field is None:
        raise ValueError(f"unsupported ONNX attribute {a.name!r} of type {a.type}")
    value = getattr(a, field)
    return (
        list(value)
        if field in ("floats", "ints", "strings", "tensors", "graphs", "sparse_tensors", "type_protos")
        else value
    )


# -- whole models ----------------------------------------------------------------------------
def load_bytes(data: bytes) -> Any:
    model = ModelProto()
    model.ParseFromString(data)
    return model


def infer_shapes(model: Any, *, strict_mode: bool = False, data_prop: bool = False) -> Any:
    """onnx's static shape inference (its compiled extension) on ``model``; a new ModelProto."""
    out = _native().shape_inference.infer_shapes(model.SerializeToString(), False, strict_mode, data_prop)
    return load_bytes(out)


# -- external data -----------------------------------------------------------------------------
def read_external(t: Any, base_dir: str) -> bytes:
    """The bytes of an external tensor, as onnx's ``external_data_helper`` reads them.

    The file is opened by onnx's own compiled check (a relative location inside ``base_dir``,
    no escape through ``..`` or links); offset and length must be non-negative integers
    within the file, so no number from the model sizes a read beyond it.
    """
    info = {e.key: e.value for e in t.external_data}
    offset = int(info["offset"]) if "offset" in info else None
    length = int(info["length"]) if "length" in info else None
    if (offset is not None and offset < 0) or (length is not None and length < 0):
        raise ValueError(f"external data offset and length must be non-negative for tensor {t.name!r}")
    fd = _native().checker._open_external_data(base_dir, info.get("location", ""), t.name, True)
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        start = offset or 0
        if start > size or (length is not None and length > size - start):
            raise ValueError(
                f"external data of tensor {t.name!r} lies beyond the end of its file ({size} bytes)"
            )
        f.seek(start)
        return f.read() if length is None else f.read(length)


def load_external(t: Any, base_dir: str) -> None:
    """``t``'s external bytes read into it (as ``external_data_helper.load_external_data_for_tensor``)."""
    t.raw_data = read_external(t, base_dir)
    t.data_location = TensorProto.DEFAULT
    del t.external_data[:]
