"""``actaudit rewrite`` on ONNX: op types and slopes in the file, checker, onnxruntime, and the numbers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from actaudit.cli import cli

SITES = ("act1", "act2", "act3")


def _weights() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    w = {
        "w1": rng.normal(0, 0.4, (8, 3, 3, 3)),
        "b1": rng.normal(0, 0.1, (8,)),
        "w2": rng.normal(0, 0.4, (8, 8, 1, 1)),
        "b2": rng.normal(0, 0.1, (8,)),
        "w3": rng.normal(0, 0.2, (10, 128)),  # Gemm transB=1: [out, in]
        "b3": rng.normal(0, 0.1, (10,)),
        "w4": rng.normal(0, 0.3, (10, 5)),  # MatMul: [in, out]
        "b4": rng.normal(0, 0.1, (5,)),
    }
    w["b1"][:3] = -15.0  # dead units at every site (conv1 sums 27 inputs: a wider spread)
    w["b2"][:2] = -4.0
    w["b3"][:3] = -4.0
    return {k: v.astype(np.float32) for k, v in w.items()}


def build_model(w: dict[str, np.ndarray]) -> onnx.ModelProto:
    nodes = [
        helper.make_node(
            "Conv", ["x", "w1", "b1"], ["z1"], name="conv1", kernel_shape=[3, 3], pads=[1, 1, 1, 1]
        ),
        helper.make_node("Relu", ["z1"], ["a1"], name="act1"),
        helper.make_node("Conv", ["a1", "w2", "b2"], ["z2"], name="conv2", kernel_shape=[1, 1]),
        helper.make_node("Relu", ["z2"], ["a2"], name="act2"),
        helper.make_node("Flatten", ["a2"], ["f"], name="flatten", axis=1),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["z3"], name="fc", transB=1),
        helper.make_node("Relu", ["z3"], ["a3"], name="act3"),
        helper.make_node("MatMul", ["a3", "w4"], ["m4"], name="fc2"),
        helper.make_node("Add", ["m4", "b4"], ["y"], name="fc2_bias"),
    ]
    graph = helper.make_graph(
        nodes,
        "rw",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])],
        [numpy_helper.from_array(v, k) for k, v in w.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def reference(w: dict[str, np.ndarray], x: np.ndarray, slopes: dict[str, float]) -> np.ndarray:
    """The leaky model in torch, from the same weights: independent of the graph edit."""
    t = {k: torch.from_numpy(v) for k, v in w.items()}
    a = [slopes.get(s, 0.0) for s in SITES]
    h = F.leaky_relu(F.conv2d(torch.from_numpy(x), t["w1"], t["b1"], padding=1), a[0])
    h = F.leaky_relu(F.conv2d(h, t["w2"], t["b2"]), a[1])
    h = F.leaky_relu(F.linear(torch.flatten(h, 1), t["w3"], t["b3"]), a[2])
    return (h @ t["w4"] + t["b4"]).numpy()  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("rw_onnx")
    w = _weights()
    onnx.save(build_model(w), str(d / "m.onnx"))
    x = np.random.default_rng(0).normal(size=(64, 3, 4, 4)).astype(np.float32)
    np.save(d / "x.npy", x)
    return {"dir": d, "onnx": d / "m.onnx", "x": d / "x.npy", "w": w, "xv": x}


def _run(args: list[Any]) -> Any:
    return CliRunner().invoke(cli, ["rewrite", *_classic([str(a) for a in args])])


def _classic(args: list[str]) -> list[str]:
    """These tests cover the classic one-α-per-site rewrite (issue 4): pin it, the default is per unit."""
    extra = [] if "--mode" in args else ["--mode", "deploy"]
    if "--to" not in args:
        extra += ["--to", "leaky"]
    elif "--slope-units" not in args:
        extra += ["--slope-units", "all"]
    if "--shift" not in args:
        extra += ["--shift", "none"]
    if "--alpha-range" not in args and "--min-slope" not in args:
        extra += ["--alpha-range", "0.001,0.3", "--min-slope", "0.001"]  # issue 4's search range
    return [*args, *extra]


def _ort(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]  # type: ignore[no-any-return]


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a.astype(np.float64) - b) / np.linalg.norm(b.astype(np.float64)))


def test_leaky_relu_nodes_slopes_and_numbers(files: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "leaky.onnx"
    before = files["onnx"].read_bytes()
    r = _run(
        [
            files["onnx"],
            "-o",
            out,
            "--calib",
            files["x"],
            "--alpha",
            "0.05",
            "--max-drift",
            "1",
            "--format",
            "json",
        ]
    )
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert files["onnx"].read_bytes() == before
    assert [s["name"] for s in rep["sites"]] == list(SITES)
    assert [s["dead"] for s in rep["sites"]] == [3, 2, 3]
    m = onnx.load(str(out))
    onnx.checker.check_model(m, full_check=True)
    ops = {n.name: n for n in m.graph.node}
    for s in SITES:
        assert ops[s].op_type == "LeakyRelu"
        assert helper.get_attribute_value(ops[s].attribute[0]) == pytest.approx(0.05)
    assert not any(n.op_type == "Relu" for n in m.graph.node)
    x = files["xv"]
    y = _ort(out, x)
    want = reference(files["w"], x, dict.fromkeys(SITES, 0.05))
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-5)
    orig = reference(files["w"], x, {})
    assert rep["summary"]["drift_verified"]["relative_l2"] == pytest.approx(_rel(want, orig), rel=1e-3)
    assert rep["output"]["checks"][0].startswith("onnx.checker")


def test_prelu_slope_initializers_broadcast_on_the_unit_axis(files: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "prelu.onnx"
    r = _run(
        [
            files["onnx"],
            "-o",
            out,
            "--calib",
            files["x"],
            "--alpha",
            "0.1",
            "--max-drift",
            "1",
            "--to",
            "prelu",
        ]
    )
    assert r.exit_code == 0, r.output
    m = onnx.load(str(out))
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    prelu = {n.name: n for n in m.graph.node if n.op_type == "PRelu"}
    assert set(prelu) == set(SITES)
    shapes = {n: inits[prelu[n].input[1]].shape for n in SITES}
    assert shapes == {"act1": (8, 1, 1), "act2": (8, 1, 1), "act3": (10,)}
    assert all(np.all(inits[prelu[n].input[1]] == np.float32(0.1)) for n in SITES)
    x = files["xv"]
    np.testing.assert_allclose(
        _ort(out, x), reference(files["w"], x, dict.fromkeys(SITES, 0.1)), rtol=1e-4, atol=1e-5
    )


def test_compensation_folds_into_conv_gemm_and_matmul_add(files: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "comp.onnx"
    r = _run(
        [
            files["onnx"],
            "-o",
            out,
            "--calib",
            files["x"],
            "--alpha",
            "0.05",
            "--max-drift",
            "100",
            "--compensate",
            "--format",
            "json",
        ]
    )
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    comp = {s["name"]: s["compensation"] for s in rep["sites"]}
    assert comp["act1"].startswith("Conv conv2") and "padded" not in comp["act1"]
    assert comp["act2"].startswith("Gemm fc")
    assert comp["act3"].startswith("Add fc2_bias")
    with_c = rep["summary"]["drift_verified"]["relative_l2"]
    without = rep["summary"]["drift_uncompensated"]["relative_l2"]
    assert with_c < 0.7 * without  # the mean is removed; the spread of α·min(z, 0) remains
    # the mean output is preserved: compare batch means of the written model and the original
    x = files["xv"]
    y = _ort(out, x)
    orig = reference(files["w"], x, {})
    leaky = reference(files["w"], x, dict.fromkeys(SITES, 0.05))
    assert np.abs(y.mean(0) - orig.mean(0)).max() < 0.5 * np.abs(leaky.mean(0) - orig.mean(0)).max()


def test_auto_alpha_within_budget(files: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "auto.onnx"
    r = _run([files["onnx"], "-o", out, "--calib", files["x"], "--max-drift", "0.02", "--format", "json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    slopes = {s["name"]: s["alpha"] for s in rep["sites"]}
    x = files["xv"]
    y = _ort(out, x)
    np.testing.assert_allclose(y, reference(files["w"], x, slopes), rtol=1e-4, atol=1e-5)
    assert _rel(y, reference(files["w"], x, {})) <= 0.02
    assert rep["search"]["passes"] <= 10
    # One pass records the audit and the reference outputs together (no second calibration pass).
    assert rep["search"]["passes_by_purpose"]["audit + reference outputs"] == 1
    assert "reference outputs" not in rep["search"]["passes_by_purpose"]


def test_checker_failure_leaves_nothing(
    files: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from actaudit.backends.onnx import surgery

    def broken(self: Any, path: Any) -> onnx.ModelProto:
        raise onnx.checker.ValidationError("simulated")

    monkeypatch.setattr(surgery.OnnxSurgeon, "reload", broken)
    r = _run(
        [
            files["onnx"],
            "-o",
            tmp_path / "x.onnx",
            "--calib",
            files["x"],
            "--alpha",
            "0.05",
            "--max-drift",
            "1",
        ]
    )
    assert r.exit_code == 1 and "does not reload" in r.stderr
    assert not list(tmp_path.iterdir())


def test_output_format_is_refused_for_onnx(files: dict[str, Any], tmp_path: Path) -> None:
    r = _run([files["onnx"], "-o", tmp_path / "x.onnx", "--calib", files["x"], "--output-format", "ts"])
    assert r.exit_code == 2 and "ONNX" in r.stderr


def test_prelu_on_dead_units_only(files: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "dead_only.onnx"
    args = [
        "--alpha",
        "0.1",
        "--max-drift",
        "1",
        "--to",
        "prelu",
        "--slope-units",
        "dead",
        "--format",
        "json",
    ]
    r = _run([files["onnx"], "-o", out, "--calib", files["x"], *args])
    assert r.exit_code == 0, r.output
    m = onnx.load(str(out))
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    slopes = {
        n.name.removeprefix("actaudit_PRelu_"): inits[n.input[1]].reshape(-1)
        for n in m.graph.node
        if n.op_type == "PRelu"
    }
    dead = {"act1": [0, 1, 2], "act2": [0, 1], "act3": [0, 1, 2]}
    for site, units in dead.items():
        want = np.zeros(slopes[site].size, np.float32)
        want[units] = 0.1
        np.testing.assert_allclose(slopes[site], want, rtol=1e-6)
    # only dead units move: less drift than the same α on every unit
    every = _run(
        [files["onnx"], "-o", tmp_path / "all.onnx", "--calib", files["x"], *args[:-4], "--format", "json"]
    )
    d_dead = json.loads(r.stdout)["summary"]["drift_verified"]["relative_l2"]
    d_all = json.loads(every.stdout)["summary"]["drift_verified"]["relative_l2"]
    assert d_dead < d_all
    r = _run([files["onnx"], "-o", tmp_path / "x.onnx", "--calib", files["x"], "--slope-units", "dead"])
    assert r.exit_code == 2 and "needs --to prelu" in r.stderr
