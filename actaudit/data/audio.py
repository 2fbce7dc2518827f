"""WAV files (mono PCM16) from a folder, a glob or one file, as float batches in [-1, 1].

Read with the standard library's ``wave``. Every header number is checked against the file
before it sizes a read: a header that claims more frames than the file holds is refused.
All files share one sample rate, and it must be the model's when the model folder states
one (``sampling_rate`` in its preprocessor or feature-extractor config): resampling would
change what the model hears, so a mismatch is refused. Clips of different lengths are never
padded: batches hold clips of one length (:func:`actaudit.data.streams.by_length`), cut to
``--max-length`` samples when given.
"""

from __future__ import annotations

import json
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import CalibrationError, InputError
from .batches import Batch, DataSource
from .streams import AUDIO_SUFFIXES, FileSettings, by_length, check_file_count

_RATE_FILES = ("preprocessor_config.json", "feature_extractor_config.json")
_PCM16 = 2


def audio_source(path: str, files: list[Path], settings: FileSettings) -> DataSource:
    files = check_file_count(path, files, AUDIO_SUFFIXES)
    rate = _header(files[0])[0]
    wanted = model_rate(settings.model_folder)
    if wanted is not None and wanted != rate:
        raise CalibrationError(
            f"{files[0]} is sampled at {rate} Hz and the model expects {wanted} Hz",
            hint=f"resample the files to {wanted} Hz first (actaudit does not resample)",
        )
    cut = settings.max_length

    def clips() -> Iterator[np.ndarray]:
        for f in files:
            got, x = _read(f)
            if got != rate:
                raise CalibrationError(
                    f"{f} is sampled at {got} Hz, {files[0].name} at {rate} Hz", hint="give files of one rate"
                )
            if x.size:
                yield x[:cut] if cut else x

    def batches() -> Iterator[Batch]:
        for arr in by_length(clips(), settings.batch_size):
            yield [arr], {}

    return DataSource(
        batches,
        f"{path} ({len(files)} WAV files, mono PCM16, {rate} Hz, unpadded)",
        total_samples=len(files),
        details={"kind": "audio", "files": len(files), "sample_rate": rate},
    )


def model_rate(folder: Path | None) -> int | None:
    """The sample rate a Hugging Face folder's preprocessor config states, if any."""
    for name in _RATE_FILES:
        f = folder / name if folder is not None else None
        if f is None or not f.is_file() or f.stat().st_size > 1 << 20:
            continue
        try:
            cfg = json.loads(f.read_bytes())
        except (ValueError, OSError):
            continue
        rate = cfg.get("sampling_rate") if isinstance(cfg, dict) else None
        if isinstance(rate, int) and rate > 0:
            return rate
    return None


def _header(f: Path) -> tuple[int, int]:
    """(sample rate, frames) of a mono PCM16 WAV whose data the file really holds."""
    try:
        with wave.open(str(f), "rb") as w:
            channels, width, rate, frames = (
                w.getnchannels(),
                w.getsampwidth(),
                w.getframerate(),
                w.getnframes(),
            )
    except FileNotFoundError:
        raise InputError(f"audio file {f} does not exist") from None
    except (wave.Error, EOFError, OSError) as e:
        raise CalibrationError(f"cannot read {f} as a PCM WAV file: {e}") from None
    if channels != 1:
        raise CalibrationError(
            f"{f} has {channels} channels; audio calibration takes mono files", hint="mix down to mono"
        )
    if width != _PCM16:
        raise CalibrationError(f"{f} has {8 * width}-bit samples; audio calibration takes 16-bit PCM")
    if rate <= 0:
        raise CalibrationError(f"{f} declares a sample rate of {rate} Hz")
    if frames * width > f.stat().st_size:
        raise CalibrationError(
            f"{f} declares {frames} frames ({frames * width} bytes) but the file holds {f.stat().st_size} bytes"
        )
    return rate, frames


def _read(f: Path) -> tuple[int, np.ndarray]:
    rate, frames = _header(f)
    try:
        with wave.open(str(f), "rb") as w:
            raw = w.readframes(frames)
    except (wave.Error, EOFError, OSError) as e:
        raise CalibrationError(f"cannot read {f}: {e}") from None
    if len(raw) != frames * _PCM16:
        raise CalibrationError(f"{f} declares {frames} frames but holds {len(raw) // _PCM16}")
    x = np.frombuffer(raw, dtype="<i2").astype(np.float32) / np.float32(32768)
    return rate, x
