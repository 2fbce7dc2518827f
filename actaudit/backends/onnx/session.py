"""onnxruntime sessions for a loaded model (plain or instrumented), with the handle's settings.

A model too large for one protobuf message goes to onnxruntime through a temporary
directory (weights as external data).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import onnxruntime as ort
from google.protobuf.message import Message

from ...errors import InputError
from . import proto as onnx
from .load import OnnxModel, _short, over_limit

__all__ = ["plain_session", "save_external", "session_for"]


def _options(handle: OnnxModel) -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if handle.threads is not None:
        so.intra_op_num_threads = handle.threads
        so.inter_op_num_threads = 1
    return so


_GPU_PROVIDERS = ("CUDAExecutionProvider", "ROCMExecutionProvider", "TensorrtExecutionProvider")


def _providers(handle: OnnxModel) -> list[str | tuple[str, dict[str, str]]]:
    if handle.provider == "CPUExecutionProvider":
        return ["CPUExecutionProvider"]
    if handle.device_id is not None and handle.provider in _GPU_PROVIDERS:
        return [(handle.provider, {"device_id": str(handle.device_id)}), "CPUExecutionProvider"]
    return [handle.provider, "CPUExecutionProvider"]


def session_for(handle: OnnxModel, model: onnx.ModelProto) -> ort.InferenceSession:
    """An onnxruntime session; models over the protobuf limit go through a temporary directory.

    A model that still refers to the input's external data (a rewrite candidate built from
    the input file's proto) finds it in the input's folder.
    """
    so, providers = _options(handle), _providers(handle)
    base = handle.file.resolve().parent if handle.external and handle.file is not None else None
    if not over_limit(model):
        if base is not None:
            so.add_session_config_entry(_DATA_FOLDER, str(base))
        return ort.InferenceSession(model.SerializeToString(), so, providers=providers)
    with tempfile.TemporaryDirectory(prefix="actaudit-") as tmp:
        path = os.path.join(tmp, "model.onnx")
        save_external(model, path, "weights.bin", base=base)
        return ort.InferenceSession(path, so, providers=providers)


_EXTERNAL_MIN = 1024  # bytes: smaller tensors stay inside the proto (onnx's own threshold)
_ALIGN = 4096  # larger tensors start on a page boundary, so onnxruntime can map them


def save_external(model: onnx.ModelProto, path: str, location: str, *, base: Path | None = None) -> None:
    """``model`` written to ``path`` with every weight of the main graph in ``location`` beside it.

    ``model`` is left as it was and is never copied: each initializer's bytes go to the
    data file one tensor at a time, and only a light proto (the graph, small tensors and
    references into the data file) is serialised. ``onnx.save_model(save_as_external_data=True)``
    instead empties the proto it is given, which then had to be read back whole. Tensors
    that ``model`` itself keeps as external data are copied from their files in ``base``.
    """
    light = onnx.ModelProto()
    _copy_fields(model, light, skip="graph")
    g, src = light.graph, model.graph
    _copy_fields(src, g, skip="initializer")
    with open(os.path.join(os.path.dirname(path), location), "wb") as data:
        for t in src.initializer:
            raw = _raw_bytes(t, base)
            if raw is None or len(raw) < _EXTERNAL_MIN:
                kept = g.initializer.add()
                kept.CopyFrom(t)
                if raw is not None and t.data_location == onnx.TensorProto.EXTERNAL:  # back inline
                    kept.data_location = onnx.TensorProto.DEFAULT
                    del kept.external_data[:]
                    kept.raw_data = raw
                continue
            if data.tell() % _ALIGN:
                data.write(b"\0" * (_ALIGN - data.tell() % _ALIGN))
            offset = data.tell()
            data.write(raw)
            del raw
            ref = g.initializer.add()
            ref.name, ref.data_type = t.name, t.data_type
            ref.dims.extend(t.dims)
            ref.doc_string = t.doc_string
            for key, value in (("location", location), ("offset", offset), ("length", data.tell() - offset)):
                entry = ref.external_data.add()
                entry.key, entry.value = key, str(value)
            ref.data_location = onnx.TensorProto.EXTERNAL
    with open(path, "wb") as f:
        f.write(light.SerializeToString())


def _copy_fields(src: Message, dst: Message, skip: str) -> None:
    """Every field of one protobuf message into another of its type, except ``skip``."""
    for f, v in src.ListFields():
        if f.name == skip:
            continue
        if f.is_repeated:
            getattr(dst, f.name).extend(v)
        elif f.message_type is not None:
            getattr(dst, f.name).CopyFrom(v)
        else:
            setattr(dst, f.name, v)


def _raw_bytes(t: onnx.TensorProto, base: Path | None) -> bytes | None:
    """The tensor's little-endian bytes as external data holds them; None for strings (kept inline)."""
    if t.data_type == onnx.TensorProto.STRING:
        return None
    if t.data_location == onnx.TensorProto.EXTERNAL:
        info = {e.key: e.value for e in t.external_data}
        if base is None or "location" not in info:
            raise ValueError(f"tensor {t.name!r} refers to external data that is not loaded")
        with open(base / info["location"], "rb") as f:
            f.seek(int(info.get("offset", 0)))
            return f.read(int(info["length"])) if "length" in info else f.read()
    if t.HasField("raw_data"):
        return t.raw_data
    return onnx.to_array(t).tobytes()


def plain_session(handle: OnnxModel) -> ort.InferenceSession:
    """The model as given, for comparisons (and to tell a bad model from a bad instrumentation)."""
    try:
        if handle.file is not None:
            return ort.InferenceSession(str(handle.file), _options(handle), providers=_providers(handle))
        return session_for(handle, handle.model)
    except Exception as e:
        raise InputError(f"onnxruntime cannot load {handle.source}: {_short(e)}") from None


# Resolves a model's external data when onnxruntime reads the model from bytes (onnxruntime >= 1.18).
_DATA_FOLDER = "session.model_external_initializers_file_folder_path"


@contextlib.contextmanager
def appended(model: onnx.ModelProto) -> Iterator[onnx.ModelProto]:
    """Nodes, outputs and initializers appended to ``model``'s main graph inside the block, as a delta.

    On exit ``model`` is back as it was and the yielded ``ModelProto`` holds only what was
    appended. Protobuf merges repeated fields of concatenated messages, so the file's bytes
    followed by the delta's bytes are the grown model: the weights are never re-serialised.
    """
    g = model.graph
    counts = len(g.node), len(g.output), len(g.initializer)
    delta = onnx.ModelProto()
    try:
        yield delta
        delta.graph.node.extend(g.node[counts[0] :])
        delta.graph.output.extend(g.output[counts[1] :])
        delta.graph.initializer.extend(g.initializer[counts[2] :])
    finally:
        del g.node[counts[0] :]
        del g.output[counts[1] :]
        del g.initializer[counts[2] :]


def grown_session(handle: OnnxModel, delta: onnx.ModelProto) -> ort.InferenceSession:
    """A session of ``handle.file``'s bytes followed by ``delta`` (see :func:`appended`).

    External data stays where it is: onnxruntime reads it from the file's folder.
    """
    assert handle.file is not None
    so = _options(handle)
    if handle.external:
        so.add_session_config_entry(_DATA_FOLDER, str(handle.file.resolve().parent))
    raw = handle.file.read_bytes() + delta.SerializeToString()
    return ort.InferenceSession(raw, so, providers=_providers(handle))
