"""Writing and reading the PyTorch files a rewrite produces (TorchScript, torch.export, pickled modules)."""

from __future__ import annotations

import io
import warnings

import torch
from torch.export import ExportedProgram
from torch.jit import ScriptModule


def clone_script(module: ScriptModule) -> ScriptModule:
    buf = io.BytesIO()
    torch.jit.save(module, buf)
    buf.seek(0)
    return torch.jit.load(buf, map_location=_script_device(module))


def _script_device(module: ScriptModule) -> torch.device:
    for t in [*module.parameters(), *module.buffers()]:
        return t.device
    return torch.device("cpu")


def save_torchscript(module: object) -> bytes:
    buf = io.BytesIO()
    torch.jit.save(module, buf)
    return buf.getvalue()


def clone_export(ep: ExportedProgram) -> ExportedProgram:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.export.save(ep, buf)
        buf.seek(0)
        return torch.export.load(buf)


def save_export(ep: ExportedProgram) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.export.save(ep, buf)
    return buf.getvalue()
