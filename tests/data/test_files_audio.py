"""WAV folders audited with the same counts as the same samples given as ``.npy``; hostile headers refused."""

from __future__ import annotations

import json
import struct
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import actaudit
from actaudit.cli import cli
from actaudit.data.audio import audio_source
from actaudit.data.streams import FileSettings
from actaudit.errors import CalibrationError


class Speech(torch.nn.Module):
    """[batch, samples] → a 1-D conv over time with ReLU, some channels dead."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv1d(1, 6, 9, stride=4)
        self.relu = torch.nn.ReLU()
        with torch.no_grad():
            self.conv.bias[[0, 4]] = -20.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv(x.unsqueeze(1))).mean(-1)


def write_wav(path: Path, samples: np.ndarray, rate: int = 16000, channels: int = 1, width: int = 2) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(samples.astype("<i2" if width == 2 else "u1").tobytes())


def clips(n: int, length: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(-20000, 20000, (n, length)).astype(np.int16)


def rates(report: actaudit.Report) -> list[tuple[list[float], list[int], int]]:
    return [
        (s["per_unit"]["fire_rate"], s["dead_units"], s["coverage"]["elements_per_unit"])
        for s in report.to_dict()["sites"]
    ]


def test_wav_folder_counts_equal_npy(tmp_path: Path) -> None:
    x = clips(5, 400)
    (tmp_path / "wavs").mkdir()
    for i, c in enumerate(x):
        write_wav(tmp_path / "wavs" / f"c{i}.wav", c)
    np.save(tmp_path / "x.npy", x.astype(np.float32) / np.float32(32768))
    model = Speech().eval()
    got = actaudit.audit(model, str(tmp_path / "wavs"), batch_size=2, per_unit=True)
    want = actaudit.audit(model, str(tmp_path / "x.npy"), batch_size=2, per_unit=True)
    assert rates(got) == rates(want)
    assert rates(got)[0][1] == [0, 4]


def test_clips_of_different_lengths_are_not_padded(tmp_path: Path) -> None:
    lengths = [400, 300, 400, 500, 300, 400]
    (tmp_path / "wavs").mkdir()
    data = [clips(1, n, seed=i)[0] for i, n in enumerate(lengths)]
    for i, c in enumerate(data):
        write_wav(tmp_path / "wavs" / f"c{i}.wav", c)
    model = Speech().eval()
    # Oracle: each clip alone, counted through a hook on the conv output.
    fires = torch.zeros(6)
    elements = 0
    for c in data:
        with torch.no_grad():
            z = model.conv(torch.tensor(c.astype(np.float32) / np.float32(32768))[None, None])
        fires += (z > 0).sum((0, 2))
        elements += z.shape[0] * z.shape[2]
    got = actaudit.audit(model, str(tmp_path / "wavs"), batch_size=2, per_unit=True).to_dict()["sites"][0]
    assert got["coverage"]["elements_per_unit"] == elements
    assert [round(r * elements) for r in got["per_unit"]["fire_rate"]] == fires.int().tolist()


def _cli(tmp_path: Path, calib: Path) -> tuple[int, str]:
    model = tmp_path / "speech.pt2"
    if not model.exists():
        ep = torch.export.export(
            Speech().eval(), (torch.zeros(2, 400),), dynamic_shapes=({0: torch.export.Dim("b")},)
        )
        torch.export.save(ep, model)
    r = CliRunner().invoke(cli, ["audit", str(model), "--calib", str(calib)])
    return r.exit_code, r.stderr


def test_header_claiming_more_frames_than_the_file_holds(tmp_path: Path) -> None:
    f = tmp_path / "huge.wav"
    write_wav(f, clips(1, 400)[0])
    data = bytearray(f.read_bytes())
    at = data.index(b"data")
    data[at + 4 : at + 8] = struct.pack("<I", 0x7FFFFFF0)
    f.write_bytes(bytes(data))
    code, err = _cli(tmp_path, f)
    assert code == 2, err
    assert "huge.wav" in err and "declares" in err


@pytest.mark.parametrize(("channels", "width", "says"), [(2, 2, "mono"), (1, 1, "16-bit")])
def test_stereo_and_8_bit_files_are_refused(tmp_path: Path, channels: int, width: int, says: str) -> None:
    f = tmp_path / "x.wav"
    write_wav(
        f,
        np.zeros(800 if width == 1 else 400, np.int16) + (128 if width == 1 else 0),
        channels=channels,
        width=width,
    )
    code, err = _cli(tmp_path, f)
    assert code == 2 and says in err


def test_sample_rate_must_be_the_models_with_no_resample(tmp_path: Path) -> None:
    (tmp_path / "wavs").mkdir()
    write_wav(tmp_path / "wavs" / "a.wav", clips(1, 100)[0], rate=8000)
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "preprocessor_config.json").write_text(json.dumps({"sampling_rate": 16000}))
    with pytest.raises(CalibrationError, match="8000 Hz and the model expects 16000 Hz"):
        audio_source(
            str(tmp_path / "wavs"),
            [tmp_path / "wavs" / "a.wav"],
            FileSettings(2, model_folder=folder, resample=False),
        )
    write_wav(tmp_path / "wavs" / "b.wav", clips(1, 100)[0], rate=16000)
    src = audio_source(str(tmp_path / "wavs"), sorted((tmp_path / "wavs").iterdir()), FileSettings(2))
    with pytest.raises(CalibrationError, match="files of one rate"):
        list(src.batches())
