"""The torch rewrite and prune editors as :mod:`actaudit.backends.base` ``Surgery`` / ``Pruner``.

A PyTorch model is one file, written whole from its serialised bytes; a Hugging Face model
whose rewrite changed weights only goes back as a folder (:mod:`.hf_write`).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path

from ...edit.folder import FOLDER
from ...fileio import atomic_bytes
from .load import Runnable
from .prune import TorchPruner
from .surgery import TorchSurgeon


class TorchRewriteEditor(TorchSurgeon):
    """The rewrite surgeon as the ``Surgery`` protocol: writes the model as one file."""

    checks = ("fresh load from disk", "calibration re-run")
    written_data: Path | None = None

    def stage(self, model: object, notes: list[str], out: Path, force: bool) -> AbstractContextManager[Path]:
        if self.writer == FOLDER:
            from .hf_write import stage_folder

            assert self.tm.folder is not None  # the folder writer is chosen for folders only
            return stage_folder(model, self.tm.folder, out, notes)
        return atomic_bytes(self.serialize(model, notes), out, force=force)

    def reload(self, path: Path) -> Runnable:
        if self.writer == FOLDER:
            from .hf_write import reload_folder

            assert self.tm.eager is not None  # a folder's model is eager
            return reload_folder(type(self.tm.eager), path, self.device)
        return super().reload(path)


class TorchPruneEditor(TorchPruner):
    """The pruner as the ``Pruner`` protocol: writes the model as one file."""

    written_data: Path | None = None

    def stage(self, model: object, notes: list[str], out: Path, force: bool) -> AbstractContextManager[Path]:
        return atomic_bytes(self.serialize(model, notes), out, force=force)
