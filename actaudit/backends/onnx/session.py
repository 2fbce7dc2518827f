"""onnxruntime sessions for a loaded model (plain or instrumented), with the handle's settings.

A model too large for one protobuf message goes to onnxruntime through a temporary
directory (weights as external data).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from typing import Any

import onnx
import onnxruntime as ort
from onnx import external_data_helper

from ...errors import InputError
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


def _providers(handle: OnnxModel) -> list[Any]:
    if handle.provider == "CPUExecutionProvider":
        return ["CPUExecutionProvider"]
    if handle.device_id is not None and handle.provider in _GPU_PROVIDERS:
        return [(handle.provider, {"device_id": str(handle.device_id)}), "CPUExecutionProvider"]
    return [handle.provider, "CPUExecutionProvider"]


def session_for(handle: OnnxModel, model: onnx.ModelProto) -> ort.InferenceSession:
    """An onnxruntime session; models over the protobuf limit go through a temporary directory."""
    so, providers = _options(handle), _providers(handle)
    if not over_limit(model):
        return ort.InferenceSession(model.SerializeToString(), so, providers=providers)
    with tempfile.TemporaryDirectory(prefix="actaudit-") as tmp:
        path = os.path.join(tmp, "model.onnx")
        save_external(model, path, "weights.bin")
        return ort.InferenceSession(path, so, providers=providers)


def save_external(model: onnx.ModelProto, path: str, location: str) -> None:
    """``onnx.save`` with every weight in ``location`` beside ``path``; ``model`` is left as it was.

    ``onnx.save_model(save_as_external_data=True)`` moves the tensors' bytes out of the
    proto it is given: a second save of the same proto would then write an almost empty
    data file. The bytes are read back from the file just written.
    """
    try:
        onnx.save_model(
            model, path, save_as_external_data=True, all_tensors_to_one_file=True, location=location
        )
    except BaseException:
        with contextlib.suppress(Exception):  # best effort: the save's own error is the one to report
            external_data_helper.load_external_data_for_model(model, os.path.dirname(path))
        raise
    external_data_helper.load_external_data_for_model(model, os.path.dirname(path))


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
