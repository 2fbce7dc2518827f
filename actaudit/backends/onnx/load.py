"""Load an ONNX model into a private copy: external data, local functions, old opsets, shapes, inputs.

The user's file (or ``ModelProto``) is never modified: everything happens on an
in-memory copy.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from google.protobuf.message import EncodeError

from ...data import InputSpec, declared_fixed_batch
from ...errors import InputError
from . import proto as onnx

__all__ = ["OnnxModel", "available_providers", "load", "over_limit", "resolve_provider"]

_PROTOBUF_LIMIT = 2**31 - 2**26  # leave headroom under protobuf's 2 GiB message limit


@dataclass
class OnnxModel:
    """A loaded ONNX model (a private copy) with the session settings chosen at load time."""

    # A model with external data beside ``file``, once prune takes it, is that file's own proto:
    # its large weights stay references into the data files (``file``'s folder).
    model: onnx.ModelProto
    inputs: list[InputSpec]
    provider: str
    threads: int | None
    source: str
    notes: list[str] = field(default_factory=list)
    input_types: dict[str, np.dtype[Any]] = field(default_factory=dict)
    declared: dict[str, tuple[int | None, ...] | None] = field(default_factory=dict)
    last_run: dict[str, float] = field(default_factory=dict)  # timings of the last capture
    # Instrumented sessions built by earlier captures on this handle, keyed by what shapes
    # them (variant, stuck fraction, axis overrides): a second audit does not rebuild.
    built: dict[tuple[Any, ...], Any] = field(default_factory=dict, repr=False, compare=False)
    device_id: int | None = None  # under torchrun: this rank's GPU (LOCAL_RANK) for a GPU provider
    fixed_batch: int | None = None  # the batch size the declared shapes fix (no free batch axis)
    unbatched: frozenset[str] = frozenset()  # inputs fed whole with every chunk of a fixed batch
    # The file whose bytes are ``model`` (nothing inlined or converted; weights inside it or
    # in external data beside it): sessions are built from those bytes, never re-serialised.
    file: Path | None = None
    external: bool = False  # ``file`` keeps weights in external data (read by onnxruntime itself)
    size: int = 0  # bytes of the serialised model, weights included (from the file sizes when read)

    def over_limit(self) -> bool:
        """Too large for one protobuf message (``_PROTOBUF_LIMIT``, read at call time)."""
        return self.size > _PROTOBUF_LIMIT


# -- loading ------------------------------------------------------------------------------------
def available_providers() -> list[str]:
    return list(ort.get_available_providers())


def resolve_provider(provider: str | None) -> str:
    """An execution provider onnxruntime offers; ``cuda`` or ``CUDA`` reads as CUDAExecutionProvider."""
    available = available_providers()
    if provider is None:
        return "CPUExecutionProvider"
    want = provider.strip().lower()
    for p in available:
        low = p.lower()
        if want in (low, low.removesuffix("executionprovider")):
            return p
    raise InputError(
        f"--provider {provider!r} is not offered by the installed onnxruntime {ort.__version__}",
        hint="available: " + ", ".join(available),
    )


def load(
    path: str | os.PathLike[str] | onnx.ModelProto, *, provider: str | None = None, threads: int | None = None
) -> OnnxModel:
    chosen = resolve_provider(provider)
    if threads is not None and threads < 1:
        raise InputError(f"--threads must be at least 1, got {threads}")
    if isinstance(path, onnx.ModelProto):
        model = onnx.ModelProto()
        model.CopyFrom(path)
        missing = [t.name for t in onnx.all_tensors(model) if _is_external(t)]
        if missing:
            raise InputError(
                f"the ModelProto refers to external data for {len(missing)} tensor(s) (e.g. {missing[0]!r}) that is not loaded",
                hint="load it with onnx.load(path) (external data next to the file are then read) or pass the path",
            )
        source = "in-memory ModelProto"
        file, external, size = None, False, _byte_size(model)
    else:
        file = Path(path)
        model, external, size = _load_path(file)
        source = str(path)
    notes: list[str] = []
    if model.functions:
        file = None
        try:
            from onnx import inliner

            model = inliner.inline_local_functions(model)
        except Exception as e:  # keep going: sites inside functions are then not seen
            notes.append(
                f"could not inline the model's local functions ({_short(e)}); activations inside them are not audited"
            )
    upgraded = _upgrade_old_opset(model, source, notes)
    if upgraded is not model:
        model, file = upgraded, None
    if size > _PROTOBUF_LIMIT:
        notes.append("model is over 2 GB: onnxruntime reads its weights from external data")
    _with_shapes(model)
    inputs, types, declared = _input_specs(model)
    fixed, unbatched = declared_fixed_batch(inputs)
    handle = OnnxModel(
        model, inputs, chosen, threads, source, notes, types, declared, fixed_batch=fixed, unbatched=unbatched
    )
    handle.file, handle.external, handle.size = file, external and file is not None, size
    return handle


def _byte_size(model: onnx.ModelProto) -> int:
    """Above 2 GiB protobuf refuses even to size the message: ``ByteSize`` raises EncodeError."""
    try:
        return int(model.ByteSize())
    except EncodeError:
        return 2**62


# The appended statistics nodes need Slice with inputs and IsInf (opset 10); 11 is the
# first opset whose Loop/If/Resize semantics onnx's version converter maps cleanly.
_MIN_OPSET = 10
_UPGRADE_TO = 11


def _upgrade_old_opset(model: onnx.ModelProto, source: str, notes: list[str]) -> onnx.ModelProto:
    """A model of opset 7-9 converted (in memory) to opset 11 with onnx's version converter.

    The audit then measures the converted graph, which computes the same function; a
    model the converter cannot handle is refused (exit 2) with its reason.
    """
    from .graph import opset_version

    old = opset_version(model)
    if old >= _MIN_OPSET or old <= 0:
        return model
    try:
        from onnx import checker, version_converter

        new = version_converter.convert_version(model, _UPGRADE_TO)
        checker.check_model(new)
    except Exception as e:
        raise InputError(
            f"{source} uses ONNX opset {old}, which the audit's statistics nodes cannot be added to, "
            f"and onnx's version converter cannot bring it to opset {_UPGRADE_TO}: {_short(e)}",
            hint=f"re-export the model at opset {_UPGRADE_TO} or later",
        ) from None
    notes.append(f"the model's ONNX opset {old} was converted in memory to opset {_UPGRADE_TO} for the audit")
    return new


def _is_external(t: onnx.TensorProto) -> bool:
    return t.HasField("data_location") and t.data_location == onnx.TensorProto.EXTERNAL


def _load_path(p: Path) -> tuple[onnx.ModelProto, bool, int]:
    """The model with its external data loaded, whether it had any, and its size with the data files."""
    try:
        model = onnx.load_bytes(p.read_bytes())
        size = p.stat().st_size
    except Exception as e:
        raise InputError(f"cannot read {p} as an ONNX model: {_short(e)}") from None
    external = [t for t in onnx.all_tensors(model) if _is_external(t)]
    if external:
        base = p.resolve().parent
        missing = sorted(
            {
                loc
                for t in external
                for loc in [next((e.value for e in t.external_data if e.key == "location"), "")]
                if not (base / loc).is_file()
            }
        )
        if missing:
            raise InputError(
                f"model {p} keeps weights in external data file(s) {', '.join(repr(m) for m in missing)} "
                f"that are not in {base}",
                hint="ONNX looks for external data next to the model file: copy them there",
            )
        locations = {next((e.value for e in t.external_data if e.key == "location"), "") for t in external}
        size += sum((base / loc).stat().st_size for loc in locations)
        try:
            for t in external:
                onnx.load_external(t, str(base))
        except Exception as e:
            raise InputError(f"cannot read the external data of {p}: {_short(e)}") from None
    return model, bool(external), size


def over_limit(model: onnx.ModelProto) -> bool:
    """Is ``model`` too large for one protobuf message (``_PROTOBUF_LIMIT``, read at call time)?

    Above 2 GiB protobuf refuses even to size the message: ``ByteSize`` raises EncodeError.
    """
    try:
        return model.ByteSize() > _PROTOBUF_LIMIT
    except EncodeError:
        return True


_SMALL_TENSOR = 4096  # bytes: initializers up to this size keep their values for shape inference


def _with_shapes(model: onnx.ModelProto) -> None:
    """Static shape inference (ranks and dtypes for the unit axis), added to ``model``'s value_info.

    Inference runs on a skeleton that has the graph and every initializer's type and dims but
    the values of small ones only (shape arithmetic reads those): the weights are neither
    copied nor serialised, and a model over 2 GB is inferred like any other. Without
    inferred shapes sites fall back to run-time rules.
    """
    try:
        inferred = onnx.infer_shapes(_skeleton(model), strict_mode=False, data_prop=True)
    except Exception:
        return
    _copy_value_info(inferred.graph, model.graph)


def _skeleton(model: onnx.ModelProto) -> onnx.ModelProto:
    light = onnx.ModelProto()
    light.ir_version = model.ir_version
    light.opset_import.extend(model.opset_import)
    light.functions.extend(model.functions)
    g, src = light.graph, model.graph
    g.name = src.name
    g.node.extend(src.node)
    g.input.extend(src.input)
    g.output.extend(src.output)
    g.value_info.extend(src.value_info)
    g.sparse_initializer.extend(src.sparse_initializer)
    for t in src.initializer:
        if math.prod(t.dims) * _itemsize(t.data_type) <= _SMALL_TENSOR:
            g.initializer.append(t)
        else:
            bare = g.initializer.add()
            bare.name, bare.data_type = t.name, t.data_type
            bare.dims.extend(t.dims)
    return light


def _itemsize(data_type: int) -> int:
    try:
        return int(np.dtype(onnx.tensor_dtype_to_np_dtype(data_type)).itemsize)
    except Exception:  # strings, unknown types: treated as large
        return _SMALL_TENSOR


def _copy_value_info(src: onnx.GraphProto, dst: onnx.GraphProto) -> None:
    """The inferred types of ``src`` (the skeleton's graph) into ``dst``, subgraphs included."""
    known = {v.name for v in dst.value_info}
    dst.value_info.extend(v for v in src.value_info if v.name not in known)
    for a, b in zip(src.node, dst.node, strict=False):
        for x, y in zip(a.attribute, b.attribute, strict=False):
            if x.type == onnx.AttributeProto.GRAPH:
                _copy_value_info(x.g, y.g)
            for gx, gy in zip(x.graphs, y.graphs, strict=False):
                _copy_value_info(gx, gy)


def _input_specs(model: onnx.ModelProto) -> tuple[list[InputSpec], dict[str, np.dtype[Any]], dict[str, Any]]:
    inits = {t.name for t in model.graph.initializer}
    specs, types, declared = [], {}, {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue  # an input with a default value (old IR): not fed
        tt = vi.type.tensor_type
        try:
            dtype = np.dtype(onnx.tensor_dtype_to_np_dtype(tt.elem_type))
        except Exception:
            dtype = np.dtype(np.float32)
        shape = None
        if tt.HasField("shape"):
            shape = tuple(
                int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else None
                for d in tt.shape.dim
            )
        specs.append(InputSpec(vi.name, shape, str(dtype)))
        types[vi.name] = dtype
        declared[vi.name] = shape
    return specs, types, declared


def _short(e: BaseException, limit: int = 200) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[:limit] + " …"


INLINE_EXTERNAL = 1 << 24  # bytes: external tensors up to this size are read into a proto by _inline_small


_WEIGHT_TYPES = (
    onnx.TensorProto.FLOAT,
    onnx.TensorProto.DOUBLE,
    onnx.TensorProto.FLOAT16,
    onnx.TensorProto.BFLOAT16,
)


def _inline_small(m: onnx.ModelProto, base: Path) -> None:
    """External tensors up to ``INLINE_EXTERNAL`` bytes read into ``m``, and every tensor that is not
    a float weight (shapes, axes: onnxruntime's shape inference reads those from the proto only);
    the weights stay references."""
    for t in onnx.all_tensors(m):
        if _is_external(t) and (_external_length(t) <= INLINE_EXTERNAL or t.data_type not in _WEIGHT_TYPES):
            onnx.load_external(t, str(base))


def _external_length(t: onnx.TensorProto) -> int:
    length = next((e.value for e in t.external_data if e.key == "length"), "")
    return int(length) if length.isdigit() else 1 << 62
