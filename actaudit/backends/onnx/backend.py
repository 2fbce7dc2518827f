"""The ONNX backend's entry points: load a copy of the model, capture its statistics, describe it.

The user's file (or ``ModelProto``) is never modified: everything happens on an
in-memory copy, and the instrumented model only lives inside the onnxruntime session
(or a temporary directory when it is too large for one protobuf message).

Jobs live in their own modules: :mod:`.load` (reading the model), :mod:`.feeds`
(binding batches to inputs), :mod:`.session` (onnxruntime sessions), :mod:`.capture`
(the instrumented runs), :mod:`.sites` / :mod:`.instrument` (what is measured, and how).
"""

from __future__ import annotations

from .capture import capture
from .feeds import batches_for, bind, bound_batches
from .load import OnnxModel, available_providers, load, resolve_provider
from .session import plain_session

__all__ = [
    "OnnxModel",
    "available_providers",
    "batches_for",
    "bind",
    "bound_batches",
    "capture",
    "load",
    "model_facts",
    "plain_session",
    "resolve_provider",
]


def model_facts(handle: OnnxModel) -> dict[str, object]:
    """Opset, producer, counts, inputs and outputs with symbolic dims (see :mod:`.facts`)."""
    from .facts import model_facts as facts

    return facts(handle.model)
