"""Calibration from the files people have: text, images and WAV audio, chosen by what the path names.

:func:`file_source` picks the reader: a ``.txt`` / ``.jsonl`` file of prompts (:mod:`.text`),
a folder, glob or file of PNG/JPEG images (:mod:`.images`), a folder, glob or file of WAV
files (:mod:`.audio`). Each reader streams: a batch is read when the capture asks for it.

Sequences of different lengths are never padded (padding would count as elements):
:func:`actaudit.data.streams.by_length` groups them into batches of one length.
"""

from __future__ import annotations

import glob as globlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .batches import DataSource

from ..errors import InputError
from .streams import AUDIO_SUFFIXES, IMAGE_SUFFIXES, TEXT_SUFFIXES, FileSettings

_GLOB_CHARS = frozenset("*?[")


def kind_of(path: str | os.PathLike[str]) -> str | None:
    """``text`` | ``images`` | ``audio`` for a path these readers take, None for anything else."""
    p = Path(path)
    if p.is_dir():
        return _folder_kind(p, _listed(p))
    if not p.exists() and _GLOB_CHARS & set(str(path)):
        return _folder_kind(p, _globbed(str(path)))
    suffix = p.suffix.lower()
    if suffix in TEXT_SUFFIXES:
        return "text"
    if suffix in IMAGE_SUFFIXES:
        return "images"
    if suffix in AUDIO_SUFFIXES:
        return "audio"
    return None


def file_source(path: str | os.PathLike[str], kind: str, settings: FileSettings) -> DataSource:
    """The :class:`~actaudit.data.batches.DataSource` for ``path`` of ``kind`` (from :func:`kind_of`)."""
    if kind == "text":
        from .text import text_source

        return text_source(Path(path), settings)
    files = files_of(path)
    if kind == "images":
        from .images import image_source

        return image_source(str(path), files, settings)
    from .audio import audio_source

    return audio_source(str(path), files, settings)


def files_of(path: str | os.PathLike[str]) -> list[Path]:
    """The files a folder, glob or single path names, sorted: one order on every run."""
    p = Path(path)
    if p.is_dir():
        return _listed(p)
    if not p.exists() and _GLOB_CHARS & set(str(path)):
        return _globbed(str(path))
    return [p]


def _listed(p: Path) -> list[Path]:
    return sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith("."))


def _globbed(pattern: str) -> list[Path]:
    return sorted(Path(f) for f in globlib.glob(pattern) if os.path.isfile(f))


def _folder_kind(p: Path, files: list[Path]) -> str:
    suffixes = {f.suffix.lower() for f in files}
    kinds = {
        k
        for k, known in (("images", IMAGE_SUFFIXES), ("audio", AUDIO_SUFFIXES), ("text", TEXT_SUFFIXES))
        if suffixes & set(known)
    }
    if kinds == {"images"} or kinds == {"audio"}:
        return kinds.pop()
    found = ", ".join(sorted(s or "(no suffix)" for s in suffixes)[:8]) or "no files"
    raise InputError(
        f"calibration folder {p} holds {found}: not one kind of file actaudit reads",
        hint="give a folder or glob of PNG/JPEG images or of WAV files, a .txt/.jsonl of prompts, "
        ".npy/.npz/.pt arrays, or --data-loader FILE.py:FUNCTION for anything else",
    )
