"""Trained models that registry packages ship, checked against NumPy on promoted tensors.

Install with ``pip install --no-deps silero-vad rapidocr-onnxruntime`` (their own
dependencies, e.g. OpenCV, are not needed: only the model files are read).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_onnx_reference import assert_matches, reference, run_tensors

from actaudit.backends.onnx import backend
from actaudit.backends.onnx.sites import find_sites
from actaudit.data import DataSource
from actaudit.stats import Capture

pytestmark = pytest.mark.realmodel
RNG = np.random.default_rng(11)


def _package_dir(name: str) -> Path:
    # find_spec does not import the package (rapidocr_onnxruntime imports OpenCV on import).
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        reason = f"{name} is not installed (pip install --no-deps {name.replace('_', '-')}; `make test` does)"
        if os.environ.get("CI"):
            pytest.fail(reason)  # CI installs it through the Makefile: a missing package is a broken setup
        pytest.skip(reason)
    return Path(spec.origin).parent


def _capture(path: Path, batches: list[Any]) -> tuple[backend.OnnxModel, Capture]:
    handle = backend.load(path)
    cap = backend.capture(
        handle,
        DataSource(lambda: iter(batches), "test"),
        samples=None,
        stuck_fraction=0.01,
        axis_overrides=[],
    )
    return handle, cap


def _check(handle: backend.OnnxModel, cap: Capture, feeds: list[dict[str, np.ndarray]]) -> None:
    """Counters of every top-level site equal NumPy's on the promoted pre-activations."""
    sites = {s.name: s for s in find_sites(handle.model.graph).sites}
    names = [sites[r.info.name].x for r in cap.sites]
    promoted = [run_tensors(handle.model, names, f) for f in feeds]
    for r in cap.sites:
        x = sites[r.info.name].x
        ref = reference([p[x] for p in promoted], r.info.unit_axis, r.info.kind, r.info.params)
        # Counts may differ by a few elements sitting exactly at a threshold when onnxruntime
        # fuses differently in the two sessions; moments to 1e-4 of their scale.
        assert_matches(r.stats, ref, count_slack=1e-4, name=r.info.name)


def test_rapidocr_classifier_counts_match_numpy() -> None:
    models = _package_dir("rapidocr_onnxruntime") / "models"
    imgs = RNG.random((8, 3, 48, 192)).astype(np.float32)
    batches = [([imgs[:4]], {}), ([imgs[4:]], {})]
    handle, cap = _capture(models / "ch_ppocr_mobile_v2.0_cls_infer.onnx", batches)
    kinds = {r.info.kind for r in cap.sites}
    assert {"relu", "hardswish", "hardsigmoid"} <= kinds  # x*Clip(x+3,0,6)/6 and SE gates
    assert not cap.uncovered and len(cap.sites) >= 30
    _check(handle, cap, [{"x": imgs[:4]}, {"x": imgs[4:]}])


def test_rapidocr_detector_counts_match_numpy() -> None:
    models = _package_dir("rapidocr_onnxruntime") / "models"
    imgs = RNG.random((2, 3, 64, 64)).astype(np.float32)
    handle, cap = _capture(models / "ch_PP-OCRv4_det_infer.onnx", [([imgs], {})])
    assert not cap.uncovered
    _check(handle, cap, [{"x": imgs}])


def test_silero_vad_sequence_counts_match_numpy() -> None:
    data = _package_dir("silero_vad") / "data"
    frames = (RNG.standard_normal((32, 576)) * 0.1).astype(np.float32)
    state = np.zeros((1, 1, 128), np.float32)
    feeds = [{"input": frames[i : i + 16], "h": state, "c": state} for i in (0, 16)]
    handle, cap = _capture(data / "silero_vad_16k_sequence.onnx", [([], f) for f in feeds])
    assert [r.info.kind for r in cap.sites].count("relu") == 5
    assert [u.op for u in cap.uncovered] == ["LSTM"]  # gates inside the fused op: listed, not dropped
    _check(handle, cap, feeds)


def test_silero_vad_if_branches_audited_or_listed() -> None:
    """silero_vad.onnx runs everything inside If(sr == 16000): the taken branch is audited, the other listed."""
    data = _package_dir("silero_vad") / "data"
    audio = (RNG.standard_normal((8, 512)) * 0.1).astype(np.float32)
    batch = (
        [],
        {"input": audio, "state": np.zeros((2, 8, 128), np.float32), "sr": np.array(16000, np.int64)},
    )
    _, cap = _capture(data / "silero_vad.onnx", [batch])
    assert len(cap.sites) == 6 and {r.info.kind for r in cap.sites} == {"relu", "sigmoid"}
    never_ran = [u for u in cap.uncovered if "never ran" in u.reason]
    inside_lstm = [u for u in cap.uncovered if u.op == "LSTM"]
    assert len(never_ran) == 6  # the 8 kHz branch
    assert inside_lstm and len(cap.uncovered) == len(never_ran) + len(inside_lstm)
    for r in cap.sites:
        assert r.stats.samples == 8 and r.stats.elements > 0
        assert int(r.stats.low.max()) <= r.stats.elements
