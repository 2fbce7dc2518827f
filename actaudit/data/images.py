"""Images (PNG, JPEG) from a folder, a glob or one file, as float batches the model expects.

Pixels are read by Pillow with only its PNG and JPEG decoders enabled; an image whose
header declares more pixels than ``PIL.Image.MAX_IMAGE_PIXELS`` (a decompression bomb) is
refused before it is decoded. ``--resize`` sets one size (bilinear), ``--normalize`` maps
8-bit values to [0, 1] (``unit``, the default), [-1, 1] (``signed``) or ImageNet's mean
and standard deviation (``imagenet``); batches are NCHW, or NHWC with ``--channels-last``.
Grayscale images stay one channel when the first image is grayscale; otherwise every image
is read as RGB.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import CalibrationError, InputError
from .batches import Batch, DataSource
from .streams import IMAGE_SUFFIXES, FileSettings, check_file_count, in_batches

if TYPE_CHECKING:
    from PIL import Image

NORMALIZE = {
    "unit": (0.0, 1.0),  # x / 255
    "signed": (-1.0, 1.0),  # x / 127.5 - 1
    "imagenet": None,
}
_ALIASES = {"0,1": "unit", "[0,1]": "unit", "-1,1": "signed", "[-1,1]": "signed"}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "F", "P;L"})
_FORMATS = ("PNG", "JPEG")


def parse_resize(text: str | None) -> tuple[int, int] | None:
    """``224`` → (224, 224); ``HxW`` → (H, W)."""
    if text is None:
        return None
    parts = text.lower().split("x")
    try:
        dims = [int(d) for d in parts]
    except ValueError:
        dims = []
    if len(dims) not in (1, 2) or not all(0 < d <= 16384 for d in dims):
        raise InputError(f"--resize {text!r} is not SIZE or HxW (e.g. 224 or 224x160, at most 16384)")
    return (dims[0], dims[-1])


def parse_normalize(text: str | None) -> str:
    name = _ALIASES.get((text or "unit").replace(" ", ""), text or "unit")
    if name not in NORMALIZE:
        raise InputError(f"--normalize {text!r} is not one of {', '.join(NORMALIZE)} (or 0,1 / -1,1)")
    return name


def image_source(path: str, files: list[Path], settings: FileSettings) -> DataSource:
    files = check_file_count(path, files, IMAGE_SUFFIXES)
    try:
        import PIL.Image  # noqa: F401
    except ImportError:
        raise InputError(
            f"calibration path {path} holds images, and Pillow is not installed",
            hint="pip install 'actaudit[hf]'",
        ) from None
    size = parse_resize(settings.resize)
    norm = parse_normalize(settings.normalize)
    with _open(files[0]) as first:
        gray = first.mode in _GRAY_MODES
        hw = size or (first.height, first.width)
    mode = "L" if gray else "RGB"

    def read(f: Path) -> np.ndarray:
        return _pixels(f, mode, hw, size is not None, norm, settings.channels_last)

    def batches() -> Iterator[Batch]:
        for arr in in_batches(files, settings.batch_size, read):
            yield [arr], {}

    layout = "NHWC" if settings.channels_last else "NCHW"
    channels = 1 if gray else 3
    return DataSource(
        batches,
        f"{path} ({len(files)} images, {hw[0]}x{hw[1]}, {'grayscale' if gray else 'RGB'}, {norm}, {layout})",
        total_samples=len(files),
        details={
            "kind": "images",
            "files": len(files),
            "shape": [len(files), *((*hw, channels) if settings.channels_last else (channels, *hw))],
            "normalize": norm,
        },
    )


def _open(f: Path) -> Image.Image:
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(f, formats=_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise CalibrationError(f"image {f} is refused: {e}") from None
    except FileNotFoundError:
        raise InputError(f"image {f} does not exist") from None
    except Exception as e:
        raise CalibrationError(
            f"cannot read image {f} as PNG or JPEG: {' '.join(str(e).split())[:200]}"
        ) from None
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and im.width * im.height > limit:
        im.close()
        raise CalibrationError(
            f"image {f} declares {im.width}x{im.height} pixels, more than the limit of {limit}"
        )
    return im


def _pixels(
    f: Path, mode: str, hw: tuple[int, int], resize: bool, norm: str, channels_last: bool
) -> np.ndarray:
    from PIL import Image

    with _open(f) as im:
        try:
            im.load()
            img = im.convert(mode)
        except Exception as e:
            raise CalibrationError(f"cannot decode image {f}: {' '.join(str(e).split())[:200]}") from None
    if resize and (img.height, img.width) != hw:
        img = img.resize((hw[1], hw[0]), Image.Resampling.BILINEAR)
    if (img.height, img.width) != hw:
        raise CalibrationError(
            f"image {f} is {img.height}x{img.width}, the first image {hw[0]}x{hw[1]}",
            hint="pass --resize SIZE or HxW to read every image at one size",
        )
    x = np.asarray(img, dtype=np.float32)
    if x.ndim == 2:
        x = x[:, :, None]
    x = _normalized(x, norm)
    return x if channels_last else np.ascontiguousarray(x.transpose(2, 0, 1))


def _normalized(x: np.ndarray, norm: str) -> np.ndarray:
    if norm == "unit":
        return x / np.float32(255)
    if norm == "signed":
        return x / np.float32(127.5) - np.float32(1)
    if x.shape[2] != 3:
        raise CalibrationError("--normalize imagenet needs RGB images; these are grayscale")
    mean = np.asarray(IMAGENET_MEAN, dtype=np.float32)
    std = np.asarray(IMAGENET_STD, dtype=np.float32)
    return (x / np.float32(255) - mean) / std
