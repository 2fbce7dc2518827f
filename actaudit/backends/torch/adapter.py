"""The PyTorch backend behind :mod:`actaudit.backends.base`: :data:`BACKEND` and :class:`TorchHandle`.

The work is in :mod:`.backend` (load, bind, capture), :mod:`.surgery` and :mod:`.prune`;
this module only presents them as the protocols the pipeline uses.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import torch

from ...data import Batch, DataSource
from ...detect import TRANSFORMERS
from ...edit.folder import FOLDER, PRUNE_NOT_A_FOLDER, names_folder
from ...errors import InputError
from ...stats import Capture
from ..base import Backend, CaptureOptions, HandleBase, LoadOptions, ModelHandle, Pruner, Surgery
from .backend import (
    TorchModel,
    bound_batches,
    capture,
    from_exported_program,
    from_module,
    model_facts,
    rewrite_writer,
)
from .data import load_pt_batches
from .load import load_torch

__all__ = ["BACKEND", "TorchBackend", "TorchHandle"]


class TorchHandle(HandleBase[TorchModel]):
    """A loaded PyTorch model behind :class:`actaudit.backends.base.ModelHandle`."""

    backend: str = "torch"

    def __init__(self, raw: TorchModel) -> None:
        super().__init__(raw, capture)

    def capture(self, source: DataSource, opts: CaptureOptions) -> Capture:
        if self.raw.fmt == "transformers":  # FFN neurons per sequence too, in the same pass
            from .hf_ffn import capture_ffn

            return capture_ffn(self.raw, source, opts)
        return super().capture(source, opts)

    def batches(self, stream: Iterable[Batch], warnings: list[str]) -> Iterator[Batch]:
        return bound_batches(self.raw, stream, warnings)

    def model_facts(self) -> dict[str, object]:
        return model_facts(self.raw)

    def use_local_device(self, local_rank: int) -> None:
        """Nothing to do: ``--device`` already names the rank's device (torchrun sets it per rank)."""

    def writer(self, fmt: str, output: Path | None, output_format: str | None, notes: list[str]) -> str:
        if fmt == TRANSFORMERS and names_folder(output):
            return FOLDER  # weights only (--mode recycle): save_pretrained, see .hf_write
        chosen = rewrite_writer(fmt, output, output_format, notes)
        if fmt == TRANSFORMERS:
            notes.append(
                "a Hugging Face config.json names one activation for every layer and cannot hold per-site "
                f"slopes or per-layer widths: the model is written as one {chosen} file, not as a folder "
                "(--mode recycle changes weights only and writes a folder when -o names one)"
            )
        return chosen

    def surgery(self, writer: str) -> Surgery:
        from .editing import TorchRewriteEditor

        return TorchRewriteEditor(self.raw, writer)

    def pruner(self, output: Path | None, output_format: str | None) -> Pruner:
        from .editing import TorchPruneEditor

        editor = TorchPruneEditor(self.raw, output, output_format)
        if self.raw.folder is not None:
            editor.notes.append(
                f"written as one file, not as a Hugging Face folder: {PRUNE_NOT_A_FOLDER} "
                "(a .pt is a pickled nn.Module: torch.load(path, weights_only=False) beside the same transformers)"
            )
        return editor


class TorchBackend:
    """Loads TorchScript, torch.export, torch.save pickles, state_dicts and safetensors."""

    def load(self, path: Path, fmt: str, opts: LoadOptions) -> tuple[ModelHandle, str]:
        if opts.provider:
            raise InputError("--provider applies to ONNX models; use --device for PyTorch checkpoints")
        if fmt == TRANSFORMERS:
            from .hf import load_folder

            return TorchHandle(load_folder(path, opts)), "transformers"
        tm = load_torch(
            path,
            arch=opts.arch,
            state_key=opts.state_key,
            trust_pickle=opts.trust_pickle,
            trust_code=opts.trust_code,
            device=opts.device,
            strip_prefixes=opts.strip_prefixes,
            non_strict=opts.non_strict,
        )
        return TorchHandle(tm), tm.fmt

    def wrap(self, model: object, opts: LoadOptions) -> tuple[ModelHandle, str] | None:
        if isinstance(model, torch.nn.Module):
            tm = from_module(model)
            return TorchHandle(tm), "in-memory" if tm.fmt != "torchscript" else "in-memory torchscript"
        if isinstance(model, getattr(torch.export, "ExportedProgram", ())):
            return TorchHandle(from_exported_program(model)), "in-memory torch.export"
        return None

    def read_calibration(self, path: Path) -> DataSource:
        return load_pt_batches(path)


BACKEND: Backend = TorchBackend()
