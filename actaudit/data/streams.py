"""What the file readers share: their settings, the suffixes they take, and batching without padding.

:func:`by_length` groups sequences of different lengths into batches of one length (padding
would count as elements), holding a bounded number of pending sequences; :func:`in_batches`
reads files a batch at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CalibrationError

TEXT_SUFFIXES = (".txt", ".jsonl")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
AUDIO_SUFFIXES = (".wav",)
# Sequences waiting for a batch of their length may take this much memory; past it the
# largest group goes as a smaller batch.
PENDING_BYTES = 64 << 20


@dataclass(frozen=True)
class FileSettings:
    """How file calibration is read: ``--max-length``, ``--resize``, ``--normalize``, ``--channels-last``."""

    batch_size: int
    max_length: int | None = None
    resize: str | None = None
    normalize: str | None = None
    channels_last: bool = False
    model_folder: Path | None = None  # a Hugging Face folder: its tokenizer and sample rate
    tokenizer: str | None = None  # --tokenizer DIR: a local folder with tokenizer.json
    resample: bool = True  # WAV files at another rate than the model's are resampled (else refused)


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
