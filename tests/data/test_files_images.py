"""Image folders (PNG, JPEG) audited with the same counts as the same pixels given as ``.npy``."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import actaudit
from actaudit.cli import cli
from actaudit.errors import InputError


def cnn(channels_last: bool = False) -> torch.nn.Module:
    torch.manual_seed(0)

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3)
            self.relu = torch.nn.ReLU()
            self.head = torch.nn.Conv2d(8, 4, 3)
            self.tanh = torch.nn.Tanh()
            with torch.no_grad():
                self.conv.bias[[1, 5]] = -50.0  # dead whatever the pixels

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if channels_last:
                x = x.permute(0, 3, 1, 2)
            return self.tanh(self.head(self.relu(self.conv(x))))

    return Net().eval()


def pixels(n: int = 7, hw: tuple[int, int] = (12, 10), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *hw, 3), dtype=np.uint8)


def save_pngs(folder: Path, arr: np.ndarray, suffix: str = ".png") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, a in enumerate(arr):
        Image.fromarray(a).save(folder / f"img{i:03d}{suffix}")


def counts(report: actaudit.Report) -> list[tuple[str, list[float], list[int], int]]:
    d = report.to_dict()
    return [
        (s["name"], s["per_unit"]["fire_rate"], s["dead_units"], s["coverage"]["elements_per_unit"])
        for s in d["sites"]
    ]


def test_png_folder_counts_equal_npy(tmp_path: Path) -> None:
    arr = pixels()
    save_pngs(tmp_path / "imgs", arr)
    npy = tmp_path / "x.npy"
    np.save(npy, np.ascontiguousarray(arr.transpose(0, 3, 1, 2)).astype(np.float32) / np.float32(255))
    model = cnn()
    from_files = actaudit.audit(model, str(tmp_path / "imgs"), batch_size=3, per_unit=True)
    from_npy = actaudit.audit(model, str(npy), batch_size=3, per_unit=True)
    assert counts(from_files) == counts(from_npy)
    assert from_files.to_dict()["calibration"]["samples"] == 7
    assert counts(from_files)[0][2] == [1, 5]
    # A glob and a single file take the same reader.
    globbed = actaudit.audit(model, str(tmp_path / "imgs" / "img00[0-2].png"), batch_size=3, per_unit=True)
    first3 = tmp_path / "x3.npy"
    np.save(first3, np.load(npy)[:3])
    assert counts(globbed) == counts(actaudit.audit(model, str(first3), per_unit=True))
    one = actaudit.audit(model, str(tmp_path / "imgs" / "img004.png"), per_unit=True)
    np.save(first3, np.load(npy)[4:5])
    assert counts(one) == counts(actaudit.audit(model, str(first3), per_unit=True))


@pytest.mark.parametrize(
    ("preset", "scale"),
    [
        ("signed", lambda x: x / np.float32(127.5) - np.float32(1)),
        (
            "imagenet",
            lambda x: (
                (x / np.float32(255) - np.array([0.485, 0.456, 0.406], np.float32))
                / np.array([0.229, 0.224, 0.225], np.float32)
            ),
        ),
    ],
)
def test_normalize_presets_and_channels_last(tmp_path: Path, preset: str, scale) -> None:
    arr = pixels(5, (9, 11), seed=1)
    save_pngs(tmp_path / "imgs", arr)
    npy = tmp_path / "x.npy"
    np.save(npy, scale(arr.astype(np.float32)).astype(np.float32))  # NHWC
    model = cnn(channels_last=True)
    kw = {"batch_size": 2, "per_unit": True}
    got = actaudit.audit(model, str(tmp_path / "imgs"), normalize=preset, channels_last=True, **kw)
    assert counts(got) == counts(actaudit.audit(model, str(npy), **kw))


def test_resize_and_the_hint_without_it(tmp_path: Path) -> None:
    save_pngs(tmp_path / "imgs", pixels(2, (12, 10)))
    save_pngs(tmp_path / "more", pixels(2, (16, 14), seed=3))
    for f in (tmp_path / "more").iterdir():
        f.rename(tmp_path / "imgs" / ("b" + f.name))
    model = cnn()
    with pytest.raises(InputError, match="--resize"):
        actaudit.audit(model, str(tmp_path / "imgs"))
    files = sorted((tmp_path / "imgs").iterdir())
    want = np.stack(
        [np.asarray(Image.open(f).convert("RGB").resize((7, 8), Image.Resampling.BILINEAR)) for f in files]
    )
    npy = tmp_path / "x.npy"
    np.save(npy, np.ascontiguousarray(want.transpose(0, 3, 1, 2)).astype(np.float32) / np.float32(255))
    got = actaudit.audit(model, str(tmp_path / "imgs"), resize="8x7", per_unit=True)
    assert counts(got) == counts(actaudit.audit(model, str(npy), per_unit=True))


def test_jpeg_folder_counts_equal_its_decoded_pixels(tmp_path: Path) -> None:
    save_pngs(tmp_path / "imgs", pixels(4), suffix=".jpg")
    decoded = np.stack([np.asarray(Image.open(f)) for f in sorted((tmp_path / "imgs").iterdir())])
    npy = tmp_path / "x.npy"
    np.save(npy, np.ascontiguousarray(decoded.transpose(0, 3, 1, 2)).astype(np.float32) / np.float32(255))
    model = cnn()
    got = actaudit.audit(model, str(tmp_path / "imgs"), per_unit=True)
    assert counts(got) == counts(actaudit.audit(model, str(npy), per_unit=True))


def _bomb(path: Path, width: int, height: int) -> None:
    """A small valid PNG whose header declares ``width`` x ``height`` pixels."""
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(path)
    data = bytearray(path.read_bytes())
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    path.write_bytes(bytes(data))


def _cli(tmp_path: Path, calib: Path, *flags: str) -> tuple[int, str]:
    model = tmp_path / "m.pt2"
    if not model.exists():
        ep = torch.export.export(
            cnn(), (torch.zeros(2, 3, 12, 10),), dynamic_shapes=({0: torch.export.Dim("b")},)
        )
        torch.export.save(ep, model)
    r = CliRunner().invoke(cli, ["audit", str(model), "--calib", str(calib), *flags])
    return r.exit_code, r.stderr


@pytest.mark.parametrize("pixels_declared", [(100_000, 100_000), (12_000, 12_000)])
def test_decompression_bomb_is_refused(tmp_path: Path, pixels_declared: tuple[int, int]) -> None:
    (tmp_path / "imgs").mkdir()
    _bomb(tmp_path / "imgs" / "bomb.png", *pixels_declared)
    code, err = _cli(tmp_path, tmp_path / "imgs")
    assert code == 2, err
    assert "bomb.png" in err and err.count("\n") == 1


def test_files_that_are_not_images_say_what_is_read(tmp_path: Path) -> None:
    (tmp_path / "mixed").mkdir()
    (tmp_path / "mixed" / "a.csv").write_text("1,2\n")
    code, err = _cli(tmp_path, tmp_path / "mixed")
    assert code == 2 and "--data-loader" in err
    (tmp_path / "x.csv").write_text("1,2\n")
    code, err = _cli(tmp_path, tmp_path / "x.csv")
    assert code == 2 and "--data-loader" in err
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    code, err = _cli(tmp_path, tmp_path / "broken.png")
    assert code == 2 and "broken.png" in err
    (tmp_path / "empty").mkdir()
    code, err = _cli(tmp_path, tmp_path / "empty")
    assert code == 2 and "--data-loader" in err


def test_images_are_read_a_batch_at_a_time(tmp_path: Path, monkeypatch) -> None:
    """Memory does not grow with the number of files: the first batch decodes batch-size images, no more."""
    from actaudit.data import images
    from actaudit.data.files import file_source
    from actaudit.data.streams import FileSettings

    save_pngs(tmp_path / "imgs", pixels(9))
    decoded: list[str] = []
    real = images._pixels
    monkeypatch.setattr(images, "_pixels", lambda f, *a: decoded.append(f.name) or real(f, *a))
    src = file_source(tmp_path / "imgs", "images", FileSettings(batch_size=4))
    stream = src.batches()
    first = next(stream)
    assert first[0][0].shape == (4, 3, 12, 10) and len(decoded) == 4
    rest = list(stream)
    assert [b[0][0].shape[0] for b in rest] == [4, 1] and len(decoded) == 9


def test_missing_pillow_gives_the_install_line(tmp_path: Path, monkeypatch) -> None:
    import sys

    save_pngs(tmp_path / "imgs", pixels(2))
    monkeypatch.setitem(sys.modules, "PIL.Image", None)
    with pytest.raises(InputError, match=r"pip install 'actaudit\[hf\]'"):
        actaudit.audit(cnn(), str(tmp_path / "imgs"))
