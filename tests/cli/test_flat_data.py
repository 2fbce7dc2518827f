"""A flat (N, C·H·W) array fed to a CNN: exit 2 with a hint naming the input shape, in every format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from actaudit.cli import cli
from actaudit.hints import conv_input_hint, conv_rank

FIX = Path(__file__).resolve().parents[2] / "fixtures"
IMAGES = FIX / "data" / "cnn_images.npy"  # 128 x 3 x 16 x 16; cnn_dead's first conv weight is 8 x 3 x 3 x 3


@pytest.fixture(scope="module")
def flat(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("flat") / "flat.npy"
    images = np.load(IMAGES)
    np.save(p, images.reshape(len(images), 3 * 16 * 16))
    return p


def _error_line(model: str, data: Path) -> str:
    r = CliRunner().invoke(cli, ["audit", str(FIX / "models" / model), "--calib", str(data)])
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    return lines[0]


@pytest.mark.parametrize("model", ["cnn_dead.ts", "cnn_dead_traced.ts"], ids=["scripted", "traced"])
def test_torchscript_names_the_input_shape_and_the_reshape(model: str, flat: Path) -> None:
    line = _error_line(model, flat)
    assert "conv2d, weight 8x3x3x3, takes 4-D input Nx3xHxW" in line
    assert "x.reshape(-1, 3, 16, 16)" in line
    # The suggestion, applied, restores the images the model takes.
    assert np.array_equal(np.load(flat).reshape(-1, 3, 16, 16), np.load(IMAGES))


def test_exported_program_names_the_input_shape_beside_the_guard(flat: Path) -> None:
    # torch.export's own message is only "Guard failed: x.size()[1] == 3"; the program's input rank
    # and its first conv weight give the same reshape as TorchScript.
    line = _error_line("cnn_dead.pt2", flat)
    assert "Guard failed" in line
    assert "conv2d, weight 8x3x3x3, takes 4-D input Nx3xHxW" in line
    assert "x.reshape(-1, 3, 16, 16)" in line


def test_onnx_names_the_input_shape_as_well(flat: Path) -> None:
    line = _error_line("cnn_dead.onnx", flat)
    assert "has shape [32, 768]" in line and "?x3x16x16" in line


def test_conv_hint_arithmetic() -> None:
    # torch's eager/scripted wording: the rank, no weight.
    assert conv_rank(
        "Expected 2D (unbatched) or 3D (batched) input to conv1d, but got input of size: [4, 80]"
    ) == (
        3,
        None,
    )
    # The traced wording carries the weight.
    assert conv_rank("Expected 5-dimensional input for 5-dimensional weight [4, 2, 3, 3, 3], but got") == (
        5,
        [4, 2, 3, 3, 3],
    )
    assert conv_rank("mat1 and mat2 shapes cannot be multiplied") is None
    # 80 values over 2 channels: one spatial axis of 40.
    assert conv_input_hint([4, 80], 3, [6, 2, 5]) == (
        "the model's conv1d, weight 6x2x5, takes 3-D input Nx2xL: "
        "reshape the flat samples, e.g. x.reshape(-1, 2, 40)"
    )
    # 3 x 16 x 8 = 384 values: 128 per channel is no square, so no guessed sides.
    odd = conv_input_hint([4, 384], 4, [8, 3, 3, 3])
    assert odd is not None and odd.endswith("reshape each flat sample's 384 values to 3xHxW")
    # Channels unknown: the rank alone; data of the right rank gets no hint from this rule.
    assert conv_input_hint([4, 384], 4, None) == (
        "the model's conv2d takes 4-D input NxCxHxW: reshape the data (4x384) to 4-D, the batch axis first"
    )
    assert conv_input_hint([4, 3, 8, 8], 4, [8, 3, 3, 3]) is None
