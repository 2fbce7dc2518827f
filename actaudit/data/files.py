"""Calibration from the files people have: text, images and WAV audio, chosen by what the path names.

:func:`file_source` picks the reader: a ``.txt`` / ``.jsonl`` file of prompts (:mod:`.text`),
a folder, glob or file of PNG/JPEG images (:mod:`.images`), a folder, glob or file of WAV
files (:mod:`.audio`). Each reader streams: a batch is read when the capture asks for it.

Sequences of different lengths are never padded (padding would count as elements):
:func:`by_length` groups them into batches of one length, holding a bounded number of
pending sequences.
"""

from __future__ import annotations

import glob as globlib
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CalibrationError, InputError

TEXT_SUFFIXES = (".txt", ".jsonl")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
AUDIO_SUFFIXES = (".wav",)
# Sequences waiting for a batch of their length may take this much memory; past it the
# largest group goes as a smaller batch.
PENDING_BYTES = 64 << 20
_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class FileSettings:
    """How file calibration is read: ``--max-length``, ``--resize``, ``--normalize``, ``--channels-last``."""

    batch_size: int
    max_length: int | None = None
    resize: str | None = None
    normalize: str | None = None
    channels_last: bool = False
    model_folder: Path | None = None  # a Hugging Face folder: its tokenizer and sample rate


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


def file_source(path: str | os.PathLike[str], kind: str, settings: FileSettings) -> Any:
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


def check_file_count(path: str, files: list[Path], known: tuple[str, ...]) -> list[Path]:
    """The files of the right kind; an empty set is an error (an audit of nothing passes every gate)."""
    picked = [f for f in files if f.suffix.lower() in known]
    if not picked:
        raise CalibrationError(f"calibration path {path} names no {'/'.join(known)} file")
    return picked


def by_length(
    items: Iterable[np.ndarray], batch_size: int, pending_bytes: int = PENDING_BYTES
) -> Iterator[np.ndarray]:
    """Stack sequences of one length into batches of ``batch_size``; memory stays bounded.

    Groups fill as sequences arrive; a full group is yielded at once. When the pending
    sequences exceed ``pending_bytes`` the largest group goes as a smaller batch, and
    what is left goes at the end.
    """
    groups: dict[int, list[np.ndarray]] = {}
    held = 0
    for x in items:
        group = groups.setdefault(len(x), [])
        group.append(x)
        held += x.nbytes
        if len(group) == batch_size:
            held -= sum(a.nbytes for a in group)
            yield np.stack(groups.pop(len(x)))
        elif held > pending_bytes:
            n = max(groups, key=lambda k: len(groups[k]) * k)
            batch = groups.pop(n)
            held -= sum(a.nbytes for a in batch)
            yield np.stack(batch)
    for n in sorted(groups):
        yield np.stack(groups[n])


def in_batches(paths: list[Path], size: int, read: Callable[[Path], np.ndarray]) -> Iterator[np.ndarray]:
    """Files read ``size`` at a time and stacked: one batch in memory, whatever the number of files."""
    for i in range(0, len(paths), size):
        yield np.stack([read(f) for f in paths[i : i + size]])
