"""Rewriting a model whose weights are external data without holding copies of the weights.

The candidates are built from the input file's own proto (weights left as references into
its data file), so onnxruntime and the writer read the weights from that file. A real
model of gigabytes is too big for CI: the size limits are lowered so that every tensor of
a small seeded model stays a reference (slopes and biases are read back), and the published file is checked with
onnxruntime against the one the ordinary path publishes and against the input.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from test_large_onnx_write import _model

from actaudit.backends.onnx import load as onnx_load
from actaudit.backends.onnx import session as onnx_session
from actaudit.backends.onnx import surgery
from actaudit.cli import cli


def _ort(path: Path, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(None, {"x": x})[0], dtype=np.float64)


def _rewrite(src: Path, out: Path, x: Path) -> dict[str, object]:
    r = CliRunner().invoke(cli, ["rewrite", str(src), "-o", str(out), "--calib", str(x), "--format", "json"])
    assert r.exit_code == 0, r.output
    rep: dict[str, object] = json.loads(r.stdout)
    return rep


def test_candidates_refer_to_the_input_data_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "in" / "m.onnx"
    src.parent.mkdir()
    onnx.save(_model(), str(src), save_as_external_data=True, location="w.bin", size_threshold=0)
    x = np.random.default_rng(1).normal(size=(64, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.setattr(onnx_load, "_PROTOBUF_LIMIT", 1024)
    ordinary = _rewrite(src, tmp_path / "a" / "m.onnx", tmp_path / "x.npy")

    built: list[onnx.ModelProto] = []
    real = surgery.rewrite_onnx

    def spy(model, plans, to="leaky", *, compensate=False):  # type: ignore[no-untyped-def]
        res = real(model, plans, to, compensate=compensate)
        built.append(res.model)
        return res

    monkeypatch.setattr(onnx_load, "INLINE_EXTERNAL", 4096)  # the weights (w1, w2) stay references
    monkeypatch.setattr(surgery, "rewrite_onnx", spy)
    lean = _rewrite(src, tmp_path / "b" / "m.onnx", tmp_path / "x.npy")
    assert built
    for m in built:  # the weights were never copied into a candidate
        w = next(t for t in m.graph.initializer if t.name == "w1")
        assert w.data_location == onnx.TensorProto.EXTERNAL and not w.raw_data
    assert lean["sites"] == ordinary["sites"]
    a, b = _ort(tmp_path / "a" / "m.onnx", x), _ort(tmp_path / "b" / "m.onnx", x)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, _ort(src, x))  # the slopes did change the function


def test_save_external_copies_tensors_that_are_references(tmp_path: Path) -> None:
    src = tmp_path / "in" / "m.onnx"
    src.parent.mkdir()
    model = _model()
    want = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    onnx.save(model, str(src), save_as_external_data=True, location="w.bin", size_threshold=0)
    refs = onnx.load(str(src), load_external_data=False)
    (tmp_path / "out").mkdir()
    onnx_session.save_external(refs, str(tmp_path / "out" / "m.onnx"), "d.bin", base=src.parent)
    back = onnx.load(str(tmp_path / "out" / "m.onnx"))
    got = {t.name: onnx.numpy_helper.to_array(t) for t in back.graph.initializer}
    assert want.keys() == got.keys() and all(np.array_equal(want[k], got[k]) for k in want)
