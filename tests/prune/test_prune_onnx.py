"""``actaudit prune`` and ``--input-range`` on ONNX: counts by hand, drift by onnxruntime, sound bounds."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import prune_models as pm
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from actaudit.cli import cli

PRE = {"s1": "bn", "s2": "c2", "s3": "c3", "s4": "c4", "s5": "c6", "s7": "g1", "s6": "mmb"}


@pytest.fixture(scope="session")
def net(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("prune_onnx")
    pm.build_onnx(d / "net.onnx")
    np.save(d / "x.npy", pm.calib())
    return d / "net.onnx", d / "x.npy"


def _run(args: list[str]) -> Any:
    r = CliRunner().invoke(cli, args)
    return r


def _prune(net: tuple[Path, Path], out: Path, *extra: str) -> dict[str, Any]:
    r = _run(["prune", str(net[0]), "-o", str(out), "--calib", str(net[1]), "--format", "json", *extra])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)  # type: ignore[no-any-return]


def _tensors(m: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    out = {t.name: tuple(t.dims) for t in m.graph.initializer}
    for n in m.graph.node:
        if n.op_type == "Constant":
            out[n.output[0]] = tuple(n.attribute[0].t.dims)
    return out


def _ort(path: Path | onnx.ModelProto, x: np.ndarray, outputs: list[str] | None = None) -> list[np.ndarray]:
    data = path.SerializeToString() if isinstance(path, onnx.ModelProto) else str(path)
    s = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return s.run(outputs, {"x": x})  # type: ignore[no-any-return]


def _macs(shapes: dict[str, tuple[int, ...]]) -> int:
    """By hand: conv outputs are 8x8 (pad 1 / k1), Gemm/MatMul once per sample."""
    conv = sum(shapes[k][0] * 64 * math.prod(shapes[k][1:]) for k in ("c1.w", "c2.w", "c3.w", "c4.w", "c6.w"))
    return conv + math.prod(shapes["g1.w"]) + math.prod(shapes["g2.w"]) + math.prod(shapes["m.w"])


def test_prune_removes_the_known_units_and_keeps_outputs(net: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "small.onnx"
    rep = _prune(net, out)
    sites = {s["name"]: s for s in rep["sites"]}
    assert sites["s1"]["removed_units"] == pm.DEAD["s1"]
    assert (
        sites["s2"]["removed_units"] == pm.DEAD["s2"] and sites["s2"]["folded_units"] == pm.STUCK_HIGH["s2"]
    )
    assert sites["s3"]["removed_units"] == pm.DEAD["s3"]
    assert sites["s7"]["folded_units"] == pm.STUCK_HIGH["s7"]
    for name, word in pm.KEPT_REASON.items():
        kept = sites[name]["kept_units"]
        assert [k["unit"] for k in kept] == pm.DEAD[name] and word in kept[0]["reason"]
        assert sites[name]["removed_units"] == []
    before = sum(math.prod(s) for s in pm.SHAPES.values())
    after = sum(math.prod(s) for s in pm.PRUNED.values())
    s = rep["summary"]
    assert s["parameters_removed"] == before - after == 136
    assert s["macs_before"] == _macs(pm.SHAPES) and s["macs_after"] == _macs(pm.PRUNED)
    for key in ("drift", "drift_fresh", "drift_verified"):
        assert s[key]["relative_l2"] <= 1e-5
    m = onnx.load(str(out))
    onnx.checker.check_model(m, full_check=True)
    got = _tensors(m)
    for k, shape in pm.PRUNED.items():
        assert got[k] == shape, k
    assert any(n.op_type == "Constant" and n.output[0] == "c3.w" for n in m.graph.node)  # edited in place
    # onnxruntime on inputs neither the tool nor the calibration saw
    x = np.random.default_rng(99).uniform(0, 1, (40, 3, 8, 8)).astype(np.float32)
    for a, b in zip(_ort(net[0], x), _ort(out, x), strict=True):
        assert np.linalg.norm(a - b) <= 1e-5 * np.linalg.norm(a)


def test_prune_table_and_refusals(net: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "t.onnx"
    r = _run(["prune", str(net[0]), "-o", str(out), "--calib", str(net[1])])
    assert r.exit_code == 0, r.output
    assert "feeds the residual Add res" in r.stdout and "parameters: 496 -> 360" in r.stdout
    r = _run(["prune", str(net[0]), "-o", str(out), "--calib", str(net[1])])
    assert r.exit_code == 2 and "already exists" in r.output
    r = _run(["prune", str(net[0]), "-o", str(tmp_path / "u.onnx"), "--calib", str(net[1]), "--only-proven"])
    assert r.exit_code == 2 and "--input-range" in r.output and not (tmp_path / "u.onnx").exists()


def test_only_proven_keeps_what_the_box_does_not_prove(net: tuple[Path, Path], tmp_path: Path) -> None:
    rep = _prune(net, tmp_path / "p.onnx", "--input-range", "0,1", "--only-proven")
    sites = {s["name"]: s for s in rep["sites"]}
    assert sites["s1"]["removed_units"] == pm.DEAD["s1"] and sites["s3"]["removed_units"] == pm.DEAD["s3"]
    # stuck at 6 or at tanh's bound on the data is not "proven dead": kept
    assert (
        sites["s2"]["folded_units"] == []
        and [k["unit"] for k in sites["s2"]["kept_units"]] == pm.STUCK_HIGH["s2"]
    )
    assert "not proven" in sites["s2"]["kept_units"][0]["reason"]
    assert rep["summary"]["drift_fresh"]["relative_l2"] <= 1e-5


def _probe(rng: np.random.Generator, lo: float, hi: float, n: int) -> np.ndarray:
    """Dense uniform samples, the two all-corner inputs and random corners of the box."""
    dense = rng.uniform(lo, hi, (n, 3, 8, 8))
    corners = np.where(rng.random((n, 3, 8, 8)) < 0.5, lo, hi)
    ends = np.stack([np.full((3, 8, 8), lo), np.full((3, 8, 8), hi)])
    return np.concatenate([dense, corners, ends]).astype(np.float32)


@pytest.mark.parametrize("box", [(0.0, 1.0), (-3.0, 2.0)])
def test_certificates_are_sound_on_a_dense_and_corner_probe(
    net: tuple[Path, Path], box: tuple[float, float]
) -> None:
    lo, hi = box
    calib = np.random.default_rng(3).uniform(lo, hi, (64, 3, 8, 8)).astype(np.float32)
    path = net[0].parent / f"calib_{lo}_{hi}.npy"
    np.save(path, calib)
    r = _run(["audit", str(net[0]), "--calib", str(path), "--input-range", f"{lo},{hi}", "--format", "json"])
    assert r.exit_code == 0, r.output
    sites = {s["name"]: s for s in json.loads(r.stdout)["sites"]}
    # every unit dead by construction is proven; a proof never contradicts the data
    for name, dead in pm.DEAD.items():
        assert set(dead) <= set(sites[name]["proven_dead_units"]), name
    for s in sites.values():
        assert set(s["proven_dead_units"]) <= set(s["dead_units"])
    # the pre-activations, read straight from onnxruntime, never reach 0 on a certified unit
    m = onnx.load(str(net[0]))
    for name in PRE.values():
        m.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    x = _probe(np.random.default_rng(5), lo, hi, 1500)
    got = dict(zip(PRE, _ort(m, x, list(PRE.values())), strict=True))
    for site, pre in got.items():
        proven = sites[site]["proven_dead_units"]
        if proven:
            axis = 1
            top = pre.max(axis=tuple(i for i in range(pre.ndim) if i != axis))
            assert (top[proven] <= 0).all(), site


def _weights_only_model(path: Path) -> None:
    """Gemm → BN (γ = 0, β = -0.5 on unit 1) → Relu → Gemm with all weights and bias <= 0 on unit 2 → Relu."""
    rng = np.random.default_rng(7)
    w1 = rng.normal(0, 1, (4, 5)).astype(np.float32)
    scale = np.ones(4, np.float32)
    scale[1] = 0.0
    beta = np.full(4, 0.1, np.float32)
    beta[1] = -0.5
    w2 = rng.normal(0, 1, (3, 4)).astype(np.float32)
    b2 = np.full(3, 0.1, np.float32)
    w2[2] = -np.abs(w2[2])
    b2[2] = -0.01
    inits = [
        numpy_helper.from_array(a, k)
        for k, a in {
            "w1": w1,
            "scale": scale,
            "beta": beta,
            "mean": np.zeros(4, np.float32),
            "var": np.ones(4, np.float32),
            "w2": w2,
            "b2": b2,
        }.items()
    ]
    nodes = [
        helper.make_node("Gemm", ["x", "w1"], ["g1"], name="g1", transB=1),
        helper.make_node("BatchNormalization", ["g1", "scale", "beta", "mean", "var"], ["bn"], name="bn"),
        helper.make_node("Relu", ["bn"], ["r1"], name="r1"),
        helper.make_node("Gemm", ["r1", "w2", "b2"], ["g2"], name="g2", transB=1),
        helper.make_node("Relu", ["g2"], ["y"], name="r2"),
    ]
    g = helper.make_graph(
        nodes,
        "w",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))


def test_weights_only_facts_need_no_box(tmp_path: Path) -> None:
    _weights_only_model(tmp_path / "w.onnx")
    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(0, 3, (64, 5)).astype(np.float32))
    r = _run(
        [
            "audit",
            str(tmp_path / "w.onnx"),
            "--calib",
            str(tmp_path / "x.npy"),
            "--input-range=-inf,inf",
            "--format",
            "json",
        ]
    )
    assert r.exit_code == 0, r.output
    sites = {s["name"]: s for s in json.loads(r.stdout)["sites"]}
    assert sites["r1"]["proven_dead_units"] == [1]  # γ = 0, β < 0 before a ReLU
    assert sites["r2"]["proven_dead_units"] == [2]  # non-positive weights and bias after a ReLU
    r = _run(
        ["audit", str(tmp_path / "w.onnx"), "--calib", str(tmp_path / "x.npy"), "--input-range=-inf,inf"]
    )
    assert "proven dead" in r.stdout


def test_input_range_errors(net: tuple[Path, Path]) -> None:
    r = _run(["audit", str(net[0]), "--calib", str(net[1]), "--input-range", "1,0"])
    assert r.exit_code == 2 and "LOW <= HIGH" in r.output
    r = _run(["audit", str(net[0]), "--calib", str(net[1]), "--input-range", "img=0,1"])
    assert r.exit_code == 2 and "no input 'img'" in r.output


@pytest.mark.realmodel
def test_prune_a_real_package_model(tmp_path: Path) -> None:
    """rapidocr's PP-OCR text-direction classifier: its SE blocks have dead ReLUs; the outputs stay put."""
    import importlib.util

    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None or spec.origin is None:
        pytest.fail("rapidocr_onnxruntime is not installed (`make install` installs it --no-deps)")
    model = Path(spec.origin).parent / "models" / "ch_ppocr_mobile_v2.0_cls_infer.onnx"
    x = np.random.default_rng(0).uniform(-1, 1, (16, 3, 48, 192)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "cls.onnx"
    r = _run(
        ["prune", str(model), "-o", str(out), "--calib", str(tmp_path / "x.npy"), "--format", "json", "-q"]
    )
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)["summary"]
    assert (
        s["units_removed"] > 0 and s["parameters_removed"] > 0 and s["drift_verified"]["relative_l2"] <= 1e-5
    )

    def floats(m: onnx.ModelProto) -> int:
        return sum(math.prod(t.dims) for t in m.graph.initializer if t.data_type == TensorProto.FLOAT) + sum(
            math.prod(a.t.dims)
            for n in m.graph.node
            if n.op_type == "Constant"
            for a in n.attribute
            if a.name == "value" and a.t.data_type == TensorProto.FLOAT
        )

    assert floats(onnx.load(str(model))) - floats(onnx.load(str(out))) == s["parameters_removed"]
    a = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    b = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert np.linalg.norm(a - b) <= 1e-5 * np.linalg.norm(a)
