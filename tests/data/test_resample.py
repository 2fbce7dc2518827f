"""WAV files at another rate than the model's are resampled by a band-limited filter, checked here
against the analytic signal: a sine of known frequency evaluated at the new sample times."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from actaudit.cli import cli
from actaudit.data.audio import audio_source
from actaudit.data.resample import resample
from actaudit.data.streams import FileSettings
from actaudit.errors import CalibrationError


def sine(freq: float, rate: int, seconds: float = 0.5, amp: float = 0.5) -> np.ndarray:
    return amp * np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate)


def interior(y: np.ndarray, rate: int) -> slice:
    """Away from the clip's ends, where the filter reads zeros beyond the signal (5 ms is plenty)."""
    return slice(rate // 200, y.size - rate // 200)


@pytest.mark.parametrize(
    ("rate_in", "rate_out", "freq"),
    [
        (44100, 16000, 1000.0),
        (48000, 16000, 3000.0),
        (8000, 16000, 440.0),
        (22050, 16000, 7000.0),
        (16000, 44100, 6000.0),
    ],
)
def test_sine_comes_out_as_the_same_sine_at_the_new_rate(rate_in: int, rate_out: int, freq: float) -> None:
    y = resample(sine(freq, rate_in), rate_in, rate_out)
    assert y.dtype == np.float32 and y.size == rate_out // 2
    want = sine(freq, rate_out)  # the same tone sampled at the new times k / rate_out
    m = interior(y, rate_out)
    assert np.abs(y[m] - want[m]).max() < 1e-3


def test_tone_above_the_new_nyquist_frequency_is_removed_not_aliased() -> None:
    # 8.8 kHz at 22.05 kHz → 16 kHz would alias to 7.2 kHz if it were not filtered out.
    y = resample(sine(8800.0, 22050, amp=1.0), 22050, 16000)
    assert np.abs(y[interior(y, 16000)]).max() < 1e-3
    # Decimation by plain sample picking (no filter) would keep it at full amplitude:
    naive = sine(8800.0, 22050, amp=1.0)[(np.arange(8000) * 22050) // 16000]
    assert np.abs(naive).max() > 0.9


def write_wav(path: Path, x: np.ndarray, rate: int) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.round(x * 32767).astype("<i2").tobytes())


@pytest.fixture
def wavs(tmp_path: Path) -> tuple[Path, Path]:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "preprocessor_config.json").write_text(json.dumps({"sampling_rate": 16000}))
    d = tmp_path / "wavs"
    d.mkdir()
    write_wav(d / "a.wav", sine(1000.0, 44100), 44100)
    write_wav(d / "b.wav", sine(500.0, 16000), 16000)
    return folder, d


def test_wav_folder_at_other_rates_reaches_the_model_at_its_rate(wavs: tuple[Path, Path]) -> None:
    folder, d = wavs
    src = audio_source(str(d), sorted(d.iterdir()), FileSettings(4, model_folder=folder))
    assert "16000 Hz, files at other rates resampled" in src.description
    clips = {a[0].shape[1]: a[0][0] for a, _ in src.batches()}
    assert set(clips) == {8000}  # both half-second clips are now 8000 samples at 16 kHz
    (batch,) = [a[0] for a, _ in src.batches()]
    m = interior(batch[0], 16000)
    assert np.abs(batch[0][m] - sine(1000.0, 16000)[m]).max() < 2e-4  # 16-bit input: a few LSB
    assert np.array_equal(batch[1], np.round(sine(500.0, 16000) * 32767).astype(np.int16) / np.float32(32768))


def test_no_resample_refuses_with_one_clear_line(wavs: tuple[Path, Path]) -> None:
    folder, d = wavs
    with pytest.raises(
        CalibrationError, match=r"44100 Hz and the model expects 16000 Hz \(--no-resample\)"
    ) as e:
        audio_source(str(d), sorted(d.iterdir()), FileSettings(4, model_folder=folder, resample=False))
    assert "drop --no-resample" in str(e.value.hint)


def test_hostile_rates_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "preprocessor_config.json").write_text(json.dumps({"sampling_rate": 10**9}))
    write_wav(tmp_path / "a.wav", sine(100.0, 8000), 8000)
    with pytest.raises(CalibrationError, match="sampling_rate of 1000000000 Hz"):
        audio_source(str(tmp_path / "a.wav"), [tmp_path / "a.wav"], FileSettings(1, model_folder=folder))
    (folder / "preprocessor_config.json").write_text(json.dumps({"sampling_rate": 16000}))
    write_wav(tmp_path / "b.wav", np.zeros(100), 100)  # 100 Hz: a 160× upsampling bomb
    src = audio_source(str(tmp_path / "b.wav"), [tmp_path / "b.wav"], FileSettings(1, model_folder=folder))
    with pytest.raises(CalibrationError, match="below 4000 Hz are not resampled"):
        list(src.batches())


def test_max_length_cuts_after_resampling(wavs: tuple[Path, Path]) -> None:
    folder, d = wavs
    src = audio_source(str(d / "a.wav"), [d / "a.wav"], FileSettings(1, model_folder=folder, max_length=3000))
    ((args, _),) = list(src.batches())
    full = resample(np.round(sine(1000.0, 44100) * 32767) / 32768, 44100, 16000)
    assert args[0].shape == (1, 3000)
    m = slice(100, 2900)
    assert np.abs(args[0][0][m] - full[m]).max() < 1e-6


def wav2vec2_folder(folder: Path) -> None:
    """A tiny speech model from a config, saved as a Hugging Face folder that states 16 kHz."""
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(0)
    cfg = Wav2Vec2Config(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        conv_dim=(8, 8), conv_kernel=(10, 3), conv_stride=(5, 2), num_conv_pos_embeddings=4,
        num_conv_pos_embedding_groups=2, do_stable_layer_norm=False, feat_extract_norm="group",
    )  # fmt: skip
    Wav2Vec2Model(cfg).eval().save_pretrained(folder)


def test_command_line_resamples_a_wav_folder_for_a_hugging_face_speech_model(
    wavs: tuple[Path, Path], tmp_path: Path
) -> None:
    folder, d = wavs
    wav2vec2_folder(folder)
    run = CliRunner().invoke
    r = run(cli, ["audit", str(folder), "--calib", str(d), "--no-resample"])
    assert r.exit_code == 2 and "44100 Hz and the model expects 16000 Hz (--no-resample)" in r.stderr
    assert "Traceback" not in r.output
    # The same clips resampled here, given as .npy: the audit counts must be the same.
    src = audio_source(str(d), sorted(d.iterdir()), FileSettings(4, model_folder=folder))
    np.save(tmp_path / "x.npy", np.concatenate([a[0] for a, _ in src.batches()]))
    got = run(cli, ["audit", str(folder), "--calib", str(d), "--format", "json", "--per-unit"])
    assert got.exit_code == 0, got.stderr
    npy = run(
        cli, ["audit", str(folder), "--calib", str(tmp_path / "x.npy"), "--format", "json", "--per-unit"]
    )
    assert npy.exit_code == 0, npy.stderr
    a, b = json.loads(got.stdout)["sites"], json.loads(npy.stdout)["sites"]
    assert a and [s["per_unit"]["fire_rate"] for s in a] == [s["per_unit"]["fire_rate"] for s in b]
