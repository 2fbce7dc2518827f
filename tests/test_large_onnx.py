"""ONNX models over protobuf's 2 GB limit take another path (external data in a temporary directory).

Building a 2 GB model in CI costs minutes and gigabytes, so the limit is lowered instead:
the fixture then crosses it and goes the large-model way through loading (no static shape
inference) and session building (weights written as external data), and the verdicts must
be those of the ordinary path.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import actaudit
from actaudit.backends.onnx import load as onnx_load

FIX = Path(__file__).resolve().parent.parent / "fixtures"


def test_over_the_protobuf_limit_audits_like_below_it(monkeypatch: pytest.MonkeyPatch) -> None:
    model, data = FIX / "models" / "cnn_dead.onnx", FIX / "data" / "cnn_images.npy"
    small = actaudit.audit(str(model), str(data), batch_size=32)
    monkeypatch.setattr(onnx_load, "_PROTOBUF_LIMIT", 1024)
    large = actaudit.audit(str(model), str(data), batch_size=32)
    assert any("over 2 GB" in w for w in large.warnings)
    assert [s.info.name for s in large.sites] == [s.info.name for s in small.sites]
    for a, b in zip(large.sites, small.sites, strict=True):
        assert (a.info.unit_axis, a.info.units) == (b.info.unit_axis, b.info.units)
        assert (a.dead_units, a.saturated_units) == (b.dead_units, b.saturated_units)
    assert small.summary()["dead"] > 0
