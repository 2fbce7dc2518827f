"""Load an ONNX model into a private copy: external data, local functions, old opsets, shapes, inputs.

The user's file (or ``ModelProto``) is never modified: everything happens on an
in-memory copy.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from google.protobuf.message import EncodeError
from onnx import external_data_helper

from ...data import InputSpec
from ...errors import InputError

__all__ = ["OnnxModel", "available_providers", "load", "over_limit", "resolve_provider"]

_PROTOBUF_LIMIT = 2**31 - 2**26  # leave headroom under protobuf's 2 GiB message limit


@dataclass
class OnnxModel:
    """A loaded ONNX model (a private copy) with the session settings chosen at load time."""

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
        missing = [t.name for t in external_data_helper._get_all_tensors(model) if _is_external(t)]
        if missing:
            raise InputError(
                f"the ModelProto refers to external data for {len(missing)} tensor(s) (e.g. {missing[0]!r}) that is not loaded",
                hint="load it with onnx.load(path) (external data next to the file are then read) or pass the path",
            )
        source = "in-memory ModelProto"
    else:
        model = _load_path(Path(path))
        source = str(path)
    notes: list[str] = []
    if model.functions:
        try:
            from onnx import inliner

            model = inliner.inline_local_functions(model)
        except Exception as e:  # keep going: sites inside functions are then not seen
            notes.append(
                f"could not inline the model's local functions ({_short(e)}); activations inside them are not audited"
            )
    model = _upgrade_old_opset(model, source, notes)
    model = _with_shapes(model, notes)
    inputs, types, declared = _input_specs(model)
    return OnnxModel(model, inputs, chosen, threads, source, notes, types, declared)


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
        from onnx import version_converter

        new = version_converter.convert_version(model, _UPGRADE_TO)
        onnx.checker.check_model(new)
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


def _load_path(p: Path) -> onnx.ModelProto:
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as e:
        raise InputError(f"cannot read {p} as an ONNX model: {_short(e)}") from None
    external = [t for t in external_data_helper._get_all_tensors(model) if _is_external(t)]
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
        try:
            external_data_helper.load_external_data_for_model(model, str(base))
        except Exception as e:
            raise InputError(f"cannot read the external data of {p}: {_short(e)}") from None
    return model


def over_limit(model: onnx.ModelProto) -> bool:
    """Is ``model`` too large for one protobuf message (``_PROTOBUF_LIMIT``, read at call time)?

    Above 2 GiB protobuf refuses even to size the message: ``ByteSize`` raises EncodeError.
    """
    try:
        return model.ByteSize() > _PROTOBUF_LIMIT
    except EncodeError:
        return True


def _with_shapes(model: onnx.ModelProto, notes: list[str]) -> onnx.ModelProto:
    """Static shape inference (ranks and dtypes for the unit axis); without it sites fall back to run-time rules."""
    if over_limit(model):
        notes.append("model is over 2 GB: static shape inference skipped, unit axes are chosen at run time")
        return model
    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception:
        return model


def _input_specs(model: onnx.ModelProto) -> tuple[list[InputSpec], dict[str, np.dtype[Any]], dict[str, Any]]:
    inits = {t.name for t in model.graph.initializer}
    specs, types, declared = [], {}, {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue  # an input with a default value (old IR): not fed
        tt = vi.type.tensor_type
        try:
            dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type))
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
