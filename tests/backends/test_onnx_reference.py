"""An independent reference for the ONNX backend's counters: promote tensors, count in NumPy.

The helpers here are imported by the other ``test_onnx_*`` modules; the tests in this
module check the reference itself on hand-made arrays.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from actaudit.kinds import Activation
from actaudit.stats import SiteStats

COUNTERS = ("low", "high", "nonfinite")
MOMENTS = ("min", "max", "neg_sum", "neg_sq", "pos_sum", "pos_sq")


def promote(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """A copy of ``model`` whose outputs are ``names`` (test-only: small models)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    del m.graph.output[:]
    for n in names:
        m.graph.output.append(onnx.ValueInfoProto(name=n))
    return m


def run_tensors(
    model: onnx.ModelProto, names: list[str], feeds: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(
        promote(model, names).SerializeToString(), so, providers=["CPUExecutionProvider"]
    )
    return dict(zip(names, sess.run(names, feeds), strict=True))


def reference(
    xs: list[np.ndarray], axis: int, kind: str, params: dict[str, float] | None = None, f: float = 0.01
) -> dict[str, Any]:
    """PyTorch-backend semantics in NumPy: counts in float32 comparisons, NaN/Inf excluded and counted."""
    thr = Activation(kind, dict(params or {})).thresholds(f)
    out: dict[str, Any] = {"elements": 0}
    acc: dict[str, np.ndarray] = {}
    for x in xs:
        x32 = np.asarray(x).astype(np.float32)
        units = x32.shape[axis]
        flat = np.moveaxis(x32, axis, -1).reshape(-1, units)
        fin = np.isfinite(flat)
        xf = np.where(fin, flat, 0).astype(np.float64)
        part = {
            "low": ((flat <= np.float32(thr.low)) & fin).sum(0)
            if math.isfinite(thr.low)
            else np.zeros(units, int),
            "high": ((flat >= np.float32(thr.high)) & fin).sum(0)
            if math.isfinite(thr.high)
            else np.zeros(units, int),
            "nonfinite": (~fin).sum(0),
            "min": np.where(fin, flat, np.inf).min(0).astype(np.float64),
            "max": np.where(fin, flat, -np.inf).max(0).astype(np.float64),
            "neg_sum": np.minimum(xf, 0).sum(0),
            "neg_sq": (np.minimum(xf, 0) ** 2).sum(0),
            "pos_sum": np.maximum(xf, 0).sum(0),
            "pos_sq": (np.maximum(xf, 0) ** 2).sum(0),
        }
        for k, v in part.items():
            if k not in acc:
                acc[k] = v
            elif k == "min":
                acc[k] = np.minimum(acc[k], v)
            elif k == "max":
                acc[k] = np.maximum(acc[k], v)
            else:
                acc[k] = acc[k] + v
        out["elements"] += flat.shape[0]
    out.update(acc)
    return out


def assert_matches(
    stats: SiteStats, ref: dict[str, Any], *, count_slack: float = 0.0, name: str = ""
) -> None:
    """Counters equal (up to ``count_slack`` of the elements), moments close."""
    assert stats.elements == ref["elements"], name
    slack = int(count_slack * ref["elements"])
    for k in COUNTERS:
        diff = np.abs(np.asarray(getattr(stats, k)) - ref[k])
        assert diff.max(initial=0) <= slack, (name, k, getattr(stats, k), ref[k])
    for k in ("min", "max"):
        np.testing.assert_allclose(getattr(stats, k), ref[k], rtol=1e-5, atol=1e-5, err_msg=f"{name} {k}")
    scale = ref["pos_sum"] - ref["neg_sum"] + 1.0
    scale_sq = ref["pos_sq"] + ref["neg_sq"] + 1.0
    for k, sc in (("neg_sum", scale), ("pos_sum", scale), ("neg_sq", scale_sq), ("pos_sq", scale_sq)):
        err = np.abs(np.asarray(getattr(stats, k)) - ref[k]) / sc
        assert err.max(initial=0) < 1e-4, (name, k, getattr(stats, k), ref[k])


def test_reference_counts_by_hand() -> None:
    x = np.array([[[-1.0, 2.0], [np.nan, 0.0]], [[3.0, -4.0], [np.inf, 5.0]]], dtype=np.float32)  # [2, 2, 2]
    ref = reference([x], axis=1, kind="relu")
    assert ref["elements"] == 4
    assert ref["low"].tolist() == [2, 1]  # unit 0: -1, -4 ; unit 1: 0 (NaN/Inf excluded)
    assert ref["nonfinite"].tolist() == [0, 2]
    assert ref["min"].tolist() == [-4.0, 0.0]
    assert ref["max"].tolist() == [3.0, 5.0]
    assert ref["neg_sum"].tolist() == [-5.0, 0.0]
    assert ref["pos_sq"].tolist() == [13.0, 25.0]


def test_reference_thresholds_follow_kinds() -> None:
    x = np.linspace(-8, 8, 33, dtype=np.float32).reshape(1, 33, 1)
    ref = reference([x], axis=2, kind="tanh")
    t = math.atanh(math.sqrt(0.99))
    assert int(ref["low"][0]) == int((x <= -t).sum())
    assert int(ref["high"][0]) == int((x >= t).sum())
    with pytest.raises(KeyError):
        reference([x], axis=2, kind="nope")
