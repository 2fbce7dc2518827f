"""The default rewrite on trained models that registry packages ship (the Makefile installs them).

Few samples, so it stays fast. Each case re-runs the original and the written file in
their own runtime to measure the drift, and checks revival from the file itself: slope
tensors (ONNX) or a backward pass on the reloaded TorchScript module.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from onnx import numpy_helper

from actaudit.cli import cli

pytestmark = pytest.mark.realmodel
MIN_SLOPE = 0.01

LOADERS = """
import numpy as np


def _audio(n=16, seed=11):
    rng = np.random.default_rng(seed)
    t = np.arange(512) / 16000
    return np.stack(
        [0.1 * rng.standard_normal(512) + 0.3 * np.sin(2 * np.pi * (200 + 20 * i) * t) for i in range(n)]
    ).astype(np.float32)


def silero_jit():
    import torch

    a = torch.from_numpy(_audio())
    for i in (0, 8):
        yield {"x": a[i : i + 8], "sr": 16000}


def silero_onnx():
    a = _audio()
    for i in (0, 8):
        yield {"input": a[i : i + 8], "state": np.zeros((2, 8, 128), np.float32), "sr": np.array(16000, np.int64)}
"""


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)  # does not import the package
    if spec is None or spec.origin is None:
        reason = f"{name} is not installed (pip install --no-deps {name.replace('_', '-')}; `make test` does)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return Path(spec.origin).parent


def _rel(new: list[np.ndarray], old: list[np.ndarray]) -> float:
    num = sum(
        float(np.square(a.astype(np.float64) - b.astype(np.float64)).sum())
        for a, b in zip(new, old, strict=True)
    )
    den = sum(float(np.square(b.astype(np.float64)).sum()) for b in old)
    return float(np.sqrt(num / den))


def _rewrite(src: Path, out: Path, *args: Any) -> dict[str, Any]:
    before = src.read_bytes()
    mode = [] if "--mode" in args else ["--mode", "deploy"]  # these tests check the deploy mode's slopes
    r = CliRunner().invoke(
        cli, ["rewrite", str(src), "-o", str(out), "--format", "json", *mode, *map(str, args)]
    )
    assert r.exit_code == 0, r.output
    assert src.read_bytes() == before
    rep: dict[str, Any] = json.loads(r.stdout)
    assert rep["summary"]["revived_units"] >= 1
    return rep


def _slopes_in(path: Path) -> list[np.ndarray]:
    m = onnx.load(str(path))
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    found: list[np.ndarray] = []

    def walk(g: onnx.GraphProto) -> None:
        for n in g.node:
            if n.op_type == "PRelu":
                found.append(inits[n.input[1]].reshape(-1))
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    walk(a.g)

    walk(m.graph)
    return found


def _check_onnx_slopes(out: Path, rep: dict[str, Any]) -> None:
    """Slope tensors read from the file: exactly the reported revived units, each >= 0.01."""
    slopes = _slopes_in(out)
    nonzero = np.concatenate([s[s != 0] for s in slopes])
    assert nonzero.size == rep["summary"]["revived_units"]
    assert nonzero.min() >= MIN_SLOPE
    claimed = sorted(a for s in rep["sites"] if s["unit_slopes"] for a in s["unit_slopes"].values())
    np.testing.assert_allclose(sorted(nonzero.tolist()), claimed, rtol=1e-5)


def _session(p: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])


def test_silero_vad_onnx(tmp_path: Path) -> None:
    src = _package_dir("silero_vad") / "data" / "silero_vad.onnx"
    (tmp_path / "loaders.py").write_text(LOADERS)
    out = tmp_path / "sv.onnx"
    rep = _rewrite(src, out, "--data-loader", f"{tmp_path / 'loaders.py'}:silero_onnx")
    _check_onnx_slopes(out, rep)
    ns: dict[str, Any] = {}
    exec(LOADERS, ns)  # the same seeded batches, fed by this test to onnxruntime itself
    old_s, new_s = _session(src), _session(out)
    old, new = [], []
    for feeds in ns["silero_onnx"]():
        old += old_s.run(None, feeds)
        new += new_s.run(None, feeds)
    drift = _rel(new, old)
    assert drift <= 0.01
    assert drift == pytest.approx(rep["summary"]["drift_verified"]["relative_l2"], rel=1e-3)
    per = rep["summary"]["drift_verified"]["per_output"]
    assert set(per) == {"output", "stateN"} and per["stateN"]["share_of_norm2"] > 0.99
    # the probability output alone: --drift-outputs steers what counts
    out2 = tmp_path / "sv_out.onnx"
    rep2 = _rewrite(
        src, out2, "--data-loader", f"{tmp_path / 'loaders.py'}:silero_onnx", "--drift-outputs", "output"
    )
    assert rep2["options"]["drift_outputs"] == ["output"]
    new2 = _session(out2)
    o_old = [old_s.run(["output"], f)[0] for f in ns["silero_onnx"]()]
    o_new = [new2.run(["output"], f)[0] for f in ns["silero_onnx"]()]
    assert _rel(o_new, o_old) <= 0.01


def test_silero_vad_jit(tmp_path: Path) -> None:
    src = _package_dir("silero_vad") / "data" / "silero_vad.jit"
    (tmp_path / "loaders.py").write_text(LOADERS)
    out = tmp_path / "sv.jit"
    rep = _rewrite(src, out, "--data-loader", f"{tmp_path / 'loaders.py'}:silero_jit")
    assert any("frozen (requires_grad=False)" in w for w in rep["warnings"])
    ns: dict[str, Any] = {}
    exec(LOADERS, ns)

    def run(path: Path) -> tuple[Any, list[np.ndarray]]:
        m = torch.jit.load(str(path)).eval()
        with torch.no_grad():
            return m, [m(**b).numpy() for b in ns["silero_jit"]()]

    _, old = run(src)
    _, new = run(out)
    drift = _rel(new, old)
    assert drift <= 0.01
    assert drift == pytest.approx(rep["summary"]["drift_verified"]["relative_l2"], rel=1e-3)
    # a backward pass on the reloaded file: the conv rows feeding revived units now get a gradient
    for path, expect_grad in ((src, False), (out, True)):
        m = torch.jit.load(str(path)).eval()
        for p in m.parameters():
            p.requires_grad_(True)  # silero ships them frozen
        batch = next(iter(ns["silero_jit"]()))
        m(**batch).sum().backward()
        checked = 0
        for s in rep["sites"]:
            if not s["unit_slopes"]:
                continue
            conv = m
            for part in s["name"].replace("activation", "reparam_conv").split("."):
                conv = getattr(conv, part, None)
            if not hasattr(conv, "weight"):
                continue  # fed by the LSTM (the decoder's ReLU), not by a conv of its own
            checked += 1
            g = conv.weight.grad
            assert g is not None
            rows = g.abs().reshape(g.shape[0], -1).sum(1)
            revived = [int(u) for u, a in s["unit_slopes"].items() if a >= MIN_SLOPE]
            if expect_grad:
                assert all(rows[u] > 0 for u in revived), s["name"]
            else:
                assert all(rows[u] == 0 for u in revived), s["name"]  # dead in the original
        assert checked > 0, "no revived site fed by a conv: the check above checked nothing"


def _text_images(n: int = 4, size: int = 64) -> np.ndarray:
    """Seeded dark strokes on a light page, normalised as PaddleOCR's detector expects."""
    rng = np.random.default_rng(3)
    img = np.full((n, size, size, 3), 0.92) + 0.03 * rng.standard_normal((n, size, size, 3))
    for i in range(n):
        for _ in range(12):
            y, x = rng.integers(4, size - 8), rng.integers(2, size - 20)
            img[i, y : y + rng.integers(2, 6), x : x + rng.integers(6, 18)] = 0.1 + 0.05 * rng.random()
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    return ((img - mean) / std).transpose(0, 3, 1, 2).astype(np.float32)


def test_ppocr_v4_det(tmp_path: Path) -> None:
    src = _package_dir("rapidocr_onnxruntime") / "models" / "ch_PP-OCRv4_det_infer.onnx"
    x = _text_images()
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "det.onnx"
    rep = _rewrite(src, out, "--calib", tmp_path / "x.npy")
    _check_onnx_slopes(out, rep)
    old = _session(src).run(None, {"x": x})
    new = _session(out).run(None, {"x": x})
    drift = _rel(new, old)
    assert drift <= 0.01
    assert drift == pytest.approx(rep["summary"]["drift_verified"]["relative_l2"], rel=1e-3)
