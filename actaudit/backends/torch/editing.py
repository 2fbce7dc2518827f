"""The torch rewrite and prune editors as :mod:`actaudit.backends.base` ``Surgery`` / ``Pruner``.

A PyTorch model is always one file, written whole from its serialised bytes.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path

from ...fileio import atomic_bytes
from .prune import TorchPruner
from .surgery import TorchSurgeon


class TorchRewriteEditor(TorchSurgeon):
    """The rewrite surgeon as the ``Surgery`` protocol: writes the model as one file."""

    checks = ("fresh load from disk", "calibration re-run")
    written_data: Path | None = None

    def stage(self, model: object, notes: list[str], out: Path, force: bool) -> AbstractContextManager[Path]:
        return atomic_bytes(self.serialize(model, notes), out, force=force)


class TorchPruneEditor(TorchPruner):
    """The pruner as the ``Pruner`` protocol: writes the model as one file."""

    written_data: Path | None = None

    def stage(self, model: object, notes: list[str], out: Path, force: bool) -> AbstractContextManager[Path]:
        return atomic_bytes(self.serialize(model, notes), out, force=force)
