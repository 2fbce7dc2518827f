"""The ONNX backend behind :mod:`actaudit.backends.base`: :data:`BACKEND` and :class:`OnnxHandle`.

The work is in :mod:`.backend` (load, bind, capture), :mod:`.surgery` and :mod:`.prune`;
this module only presents them as the protocols the pipeline uses.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from ...data import Batch, DataSource
from ...errors import InputError
from ..base import Backend, HandleBase, LoadOptions, ModelHandle, Pruner, Surgery
from . import backend
from . import proto as onnx
from .backend import OnnxModel

__all__ = ["BACKEND", "OnnxBackend", "OnnxHandle"]


class OnnxHandle(HandleBase[OnnxModel]):
    """A loaded ONNX model behind :class:`actaudit.backends.base.ModelHandle`."""

    backend: str = "onnx"

    def __init__(self, raw: OnnxModel) -> None:
        super().__init__(raw, backend.capture)

    def batches(self, stream: Iterable[Batch], warnings: list[str]) -> Iterator[Batch]:
        return backend.bound_batches(self.raw, stream, warnings)

    def model_facts(self) -> dict[str, object]:
        return backend.model_facts(self.raw)

    def use_local_device(self, local_rank: int) -> None:
        self.raw.device_id = local_rank  # read by GPU execution providers only

    def writer(self, fmt: str, output: Path | None, output_format: str | None, notes: list[str]) -> str:
        if output_format:
            raise InputError(
                "--output-format applies to PyTorch eager models; an ONNX model is written as ONNX"
            )
        if output is not None and self.raw.over_limit():
            from .surgery import check_data_file

            check_data_file(self.raw, Path(output))  # up front, not after the calibration passes
        return "onnx"

    def surgery(self, writer: str) -> Surgery:
        from .editing import OnnxRewriteEditor

        return OnnxRewriteEditor(self.raw)

    def pruner(self, output: Path | None, output_format: str | None) -> Pruner:
        self.writer("onnx", output, output_format, [])
        from .editing import OnnxPruneEditor

        return OnnxPruneEditor(self.raw)


class OnnxBackend:
    """Loads ``.onnx`` files (external data beside them included) and in-memory ``ModelProto``s."""

    def load(self, path: Path, fmt: str, opts: LoadOptions) -> tuple[ModelHandle, str]:
        if opts.arch or opts.strip_prefixes or opts.non_strict:
            raise InputError(
                "--arch, --strip-prefix and --non-strict apply to state_dict checkpoints, not to ONNX models"
            )
        return OnnxHandle(backend.load(os.fspath(path), provider=opts.provider, threads=opts.threads)), "onnx"

    def wrap(self, model: object, opts: LoadOptions) -> tuple[ModelHandle, str] | None:
        if not isinstance(model, onnx.ModelProto):
            return None
        return OnnxHandle(backend.load(model, provider=opts.provider, threads=opts.threads)), "onnx"

    def read_calibration(self, path: Path) -> DataSource:
        raise InputError(f"calibration file {path}: the ONNX backend reads .npy and .npz calibration data")


BACKEND: Backend = OnnxBackend()
