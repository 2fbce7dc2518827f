"""A model with a fixed batch dimension is fed through one re-cut path, whichever command runs it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from test_onnx_capture import cnn, images

import actaudit
from actaudit.inspection import inspect_model


def test_inspect_feeds_an_onnx_model_its_fixed_batch(tmp_path: Path) -> None:
    """The handle states its fixed batch; inspect then draws that many synthetic samples."""
    path = tmp_path / "fixed.onnx"
    onnx.save(cnn(17, batch=4), str(path))
    got = inspect_model(str(path))
    assert len(got.sites) > 0


def test_samples_carry_over_between_batches_of_the_data(tmp_path: Path) -> None:
    """Batches of 3 for a model fixed at 4: 12 samples make 3 chunks, none dropped."""
    path = tmp_path / "fixed.onnx"
    onnx.save(cnn(17, batch=4), str(path))
    x = images(12)
    rep = actaudit.audit(str(path), [x[i : i + 3] for i in range(0, 12, 3)])
    assert rep.calibration["samples"] == 12
    assert not any("fixed at 4" in w for w in rep.warnings)
    one = actaudit.audit(str(path), np.ascontiguousarray(x), batch_size=4)
    assert [v.dead_units for v in rep.sites] == [v.dead_units for v in one.sites]
