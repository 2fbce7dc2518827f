"""WAV files (mono PCM16) from a folder, a glob or one file, as float batches in [-1, 1].

Read with the standard library's ``wave``. Every header number is checked against the file
before it sizes a read: a header that claims more frames than the file holds is refused.
When the model folder states a sample rate (``sampling_rate`` in its preprocessor or
feature-extractor config), files at another rate are resampled to it by a band-limited
polyphase filter (:mod:`actaudit.data.resample`), or refused with ``--no-resample``; without
one, all files must share one rate. Clips of different lengths are never
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
from .resample import MAX_RATE, output_length, resample
from .streams import AUDIO_SUFFIXES, FileSettings, by_length, check_file_count

_RATE_FILES = ("preprocessor_config.json", "feature_extractor_config.json")
_PCM16 = 2
MIN_RATE = 4000  # Hz: the lowest rate resampled (telephone speech is 8000 Hz); bounds the upsampling factor


def audio_source(path: str, files: list[Path], settings: FileSettings) -> DataSource:
    files = check_file_count(path, files, AUDIO_SUFFIXES)
    rate = _header(files[0])[0]
    wanted = model_rate(settings.model_folder)
    if wanted is not None and not MIN_RATE <= wanted <= MAX_RATE:
        raise CalibrationError(
            f"the model folder {settings.model_folder} states a sampling_rate of {wanted} Hz",
            hint=f"audio calibration takes {MIN_RATE}..{MAX_RATE} Hz",
        )
    if wanted is not None and wanted != rate and not settings.resample:
        raise CalibrationError(
            f"{files[0]} is sampled at {rate} Hz and the model expects {wanted} Hz (--no-resample)",
            hint=f"drop --no-resample to resample it to {wanted} Hz, or resample the files first",
        )
    target = wanted if wanted is not None else rate
    cut = settings.max_length

    def clips() -> Iterator[np.ndarray]:
        for f in files:
            got, x = _read(f)
            if got != target:
                if wanted is None:
                    raise CalibrationError(
                        f"{f} is sampled at {got} Hz, {files[0].name} at {rate} Hz",
                        hint="give files of one rate (or a model folder whose preprocessor config states "
                        "its sampling_rate: files are then resampled to it)",
                    )
                if not settings.resample:
                    raise CalibrationError(
                        f"{f} is sampled at {got} Hz and the model expects {wanted} Hz (--no-resample)",
                        hint=f"drop --no-resample to resample it to {wanted} Hz",
                    )
                x = _resampled(f, x, got, target, cut)
            if x.size:
                yield x[:cut] if cut else x

    def batches() -> Iterator[Batch]:
        for arr in by_length(clips(), settings.batch_size):
            yield [arr], {}

    how = (
        f", files at other rates resampled to {target} Hz (polyphase windowed sinc)"
        if wanted is not None and settings.resample
        else ""
    )
    return DataSource(
        batches,
        f"{path} ({len(files)} WAV files, mono PCM16, {target} Hz{how}, unpadded)",
        total_samples=len(files),
        details={"kind": "audio", "files": len(files), "sample_rate": target},
    )


MAX_RESAMPLED = 1 << 27  # samples of one clip after resampling (512 MiB as float32)


def _resampled(f: Path, x: np.ndarray, got: int, target: int, cut: int | None) -> np.ndarray:
    """``x`` at ``target`` Hz; with ``--max-length`` only the part that is kept is resampled."""
    if got < MIN_RATE:
        raise CalibrationError(f"{f} is sampled at {got} Hz; files below {MIN_RATE} Hz are not resampled")
    if cut is not None:
        x = x[: -(-cut * got // target) + 1]
    if output_length(x.size, got, target) > MAX_RESAMPLED:
        raise CalibrationError(
            f"{f} would hold more than {MAX_RESAMPLED} samples at {target} Hz",
            hint="cut the clips with --max-length",
        )
    y = resample(x, got, target)
    return y[:cut] if cut is not None else y


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
    if not 0 < rate <= MAX_RATE:
        raise CalibrationError(f"{f} declares a sample rate of {rate} Hz (at most {MAX_RATE} Hz is read)")
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
