"""Parity: a PyTorch module and its ONNX exports (TorchScript-based and dynamo) report alike."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import actaudit

torch = pytest.importorskip("torch")
nn = torch.nn
FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


def _verdicts(report: Any) -> list[tuple[str, int, list[int], list[int]]]:
    return [(v.info.kind, v.info.units, v.dead_units, v.saturated_units) for v in report.sites]


def _fixture_cases() -> list[Any]:
    path = FIXTURES / "expected.json"
    if not path.exists():
        return []
    models = json.loads(path.read_text())["models"]
    return [
        pytest.param(name, fmt, id=f"{name}-{fmt}")
        for name, m in models.items()
        for fmt in ("onnx", "onnx_dynamo")
        if fmt in m["files"]
    ]


def _calib(spec: dict[str, Any]) -> str:
    """The model's .npy, or its .npz for models with several inputs (arrays named after them)."""
    calib = spec["calib"]
    return str(FIXTURES / (calib["npy"] if "npy" in calib else calib["npz"]))


@pytest.mark.parametrize(("name", "fmt"), _fixture_cases())
def test_fixture_exports_match_the_pytorch_audit(name: str, fmt: str, fixtures_on_path: Path) -> None:
    spec = json.loads((FIXTURES / "expected.json").read_text())["models"][name]
    data = _calib(spec)
    ref = actaudit.audit(str(FIXTURES / spec["files"]["pickled"]), data, trust_pickle=True)
    got = actaudit.audit(str(FIXTURES / spec["files"][fmt]), data)
    assert _verdicts(got) == _verdicts(ref)
    assert not got.uncovered
    if fmt == "onnx_dynamo":  # module paths from the exporter's metadata
        assert [v.info.name for v in got.sites] == [v.info.name for v in ref.sites]


@pytest.mark.parametrize(("name", "fmt"), _fixture_cases())
def test_fixture_exports_match_the_generator_catalogue(name: str, fmt: str) -> None:
    """Units, unit axes, dead and saturated units as fixtures/expected.json derives them (without actaudit)."""
    spec = json.loads((FIXTURES / "expected.json").read_text())["models"][name]
    got = actaudit.audit(str(FIXTURES / spec["files"][fmt]), _calib(spec))
    want = [
        (s["kind"], s["unit_axis"], s["units"], s["dead_units"], s["saturated_units"]) for s in spec["sites"]
    ]
    assert [
        (v.info.kind, v.info.unit_axis, v.info.units, v.dead_units, v.saturated_units) for v in got.sites
    ] == want


class Block(nn.Module):
    """A module reused at two call sites, and a functional ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(4, 6)
        self.gate = nn.Sigmoid()
        self.act = nn.SiLU()

    def forward(self, x: Any) -> Any:
        y = self.relu(self.bn(self.conv(x)))
        y = self.relu(y - 0.5)  # second call of the same module
        y = self.act(y)
        z = torch.nn.functional.relu(y.mean((2, 3)) - 0.1)
        return self.gate(self.fc(z))


def _block() -> Any:
    torch.manual_seed(0)
    m = Block().eval()
    with torch.no_grad():
        m.conv.bias[[0, 2]] = -50.0  # dead channels, known by construction
        m.fc.bias[[1, 4]] = 40.0  # saturated sigmoid units
    return m


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript-exporter", "dynamo-exporter"])
def test_fresh_export_matches_the_pytorch_audit(dynamo: bool, tmp_path: Path) -> None:
    model = _block()
    x = torch.randn(48, 4, 6, 6)
    path = tmp_path / "block.onnx"
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            prog = torch.onnx.export(
                model,
                (x[:2],),
                dynamo=True,
                dynamic_shapes=({0: torch.export.Dim("b", min=1)},),
                verbose=False,
            )
            prog.save(str(path))
        else:
            torch.onnx.export(
                model, (x[:2],), str(path), dynamo=False, input_names=["x"], dynamic_axes={"x": {0: "b"}}
            )
    ref = actaudit.audit(model, x.numpy())
    got = actaudit.audit(str(path), x.numpy())
    assert _verdicts(got) == _verdicts(ref)
    assert _verdicts(got)[0][2] == [0, 2] and _verdicts(got)[-1][3] == [1, 4]
    if dynamo:
        assert [v.info.name for v in got.sites] == [v.info.name for v in ref.sites]
    for a, b in zip(got.sites, ref.sites, strict=True):
        np.testing.assert_array_equal(a.stats.low, b.stats.low)
        np.testing.assert_allclose(a.stats.neg_sum, b.stats.neg_sum, rtol=1e-3, atol=1e-3)
