"""Rewriting and pruning ONNX models over protobuf's 2 GB limit: weights written as external data.

A 2 GB model in CI costs minutes and gigabytes, so the limit is lowered (as in
test_large_onnx.py) and a small seeded model crosses it. Every number is checked against
an independent computation: onnxruntime on the published file against onnxruntime on the
input, and the slope bytes read straight out of the data file with numpy.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from actaudit import fileio
from actaudit.backends.onnx import load as onnx_load
from actaudit.backends.onnx import session as onnx_session
from actaudit.cli import cli

UNITS, DEAD = 300, 40  # 300 float32 slopes = 1200 bytes: above onnx's 1024-byte external threshold


def _model() -> onnx.ModelProto:
    """x[N,16] → Gemm(300) → Relu → Gemm(4): units 0..39 have bias -12 (z < -5 on every sample)."""
    rng = np.random.default_rng(7)
    w1 = rng.normal(0, 0.3, (UNITS, 16)).astype(np.float32)
    b1 = np.full(UNITS, 4.0, np.float32)  # live units: z > 0 on nearly every sample, far from dead
    b1[:DEAD] = -12.0  # |w1·x| ≤ ~1.2·6σ: these never reach 0
    w2 = rng.normal(0, 0.2, (4, UNITS)).astype(np.float32)
    b2 = rng.normal(0, 0.1, (4,)).astype(np.float32)
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["z1"], name="fc1", transB=1),
        helper.make_node("Relu", ["z1"], ["a1"], name="act1"),
        helper.make_node("Gemm", ["a1", "w2", "b2"], ["y"], name="fc2", transB=1),
    ]
    inits = [numpy_helper.from_array(v, k) for k, v in {"w1": w1, "b1": b1, "w2": w2, "b2": b2}.items()]
    graph = helper.make_graph(
        nodes,
        "large",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("large_write")
    model = _model()
    onnx.save(model, str(d / "m.onnx"))
    (d / "ext").mkdir()
    onnx.save(
        model,
        str(d / "ext" / "m.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    x = np.random.default_rng(0).normal(size=(128, 16)).astype(np.float32)
    np.save(d / "x.npy", x)
    return {"onnx": d / "m.onnx", "ext": d / "ext" / "m.onnx", "x": d / "x.npy", "xv": x}


def _ort(path: Path, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(None, {"x": x})[0], dtype=np.float64)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _rewrite(model: Path, out: Path, x: Path) -> Any:
    return CliRunner().invoke(
        cli, ["rewrite", str(model), "-o", str(out), "--calib", str(x), "--format", "json"]
    )


def _raw_external(path: Path, name: str) -> np.ndarray | None:
    """A float32 initializer's values read with numpy from the data file its entry points at."""
    m = onnx.load(str(path), load_external_data=False)
    t = next(t for t in m.graph.initializer if t.name == name)
    if t.data_location != TensorProto.EXTERNAL:
        return None
    info = {e.key: e.value for e in t.external_data}
    with open(path.parent / info["location"], "rb") as f:
        f.seek(int(info.get("offset", 0)))
        raw = f.read(int(info["length"]))
    return np.frombuffer(raw, dtype="<f4")


def _check_published(out: Path, rep: dict[str, Any], src: Path, x: np.ndarray) -> None:
    data = out.parent / f"{out.name}.data"
    assert out.is_file() and data.is_file()
    assert sorted(os.listdir(out.parent)) == sorted([out.name, data.name])  # nothing temporary left
    assert rep["output"]["external_data"]["path"] == str(data)
    assert out.stat().st_size < data.stat().st_size  # the weights are in the data file, not the proto
    onnx.checker.check_model(str(out), full_check=True)
    # drift recomputed with onnxruntime from the published path, against the input model
    rel = _rel(_ort(out, x), _ort(src, x))
    assert rel <= rep["options"]["max_drift"]
    assert rel == pytest.approx(rep["summary"]["drift_verified"]["relative_l2"], rel=1e-3, abs=1e-6)


def test_rewrite_over_the_limit_writes_external_data(
    files: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(onnx_load, "_PROTOBUF_LIMIT", 1024)
    before = files["onnx"].read_bytes()
    out = tmp_path / "pub" / "leaky.onnx"
    out.parent.mkdir()
    r = _rewrite(files["onnx"], out, files["x"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert files["onnx"].read_bytes() == before
    assert [s["dead"] for s in rep["sites"]] == [DEAD]
    _check_published(out, rep, files["onnx"], files["xv"])
    # the slopes, read with numpy from the data file: positive on the dead units, 0 elsewhere
    m = onnx.load(str(out), load_external_data=False)
    prelu = [n for n in m.graph.node if n.op_type == "PRelu"]
    assert len(prelu) == 1
    slopes = _raw_external(out, prelu[0].input[1])
    assert slopes is not None and slopes.size == UNITS
    assert np.flatnonzero(slopes > 0).tolist() == list(range(DEAD))
    assert np.all(slopes[DEAD:] == 0)
    listed = rep["output"]["slopes_in_file"]
    assert [s["op"] for s in listed] == ["PRelu"]


def test_input_with_external_data_rewrites(files: dict[str, Any], tmp_path: Path) -> None:
    """An input whose weights are in weights.bin loads; below the limit the output is one file."""
    src, before = files["ext"], (files["ext"].parent / "weights.bin").read_bytes()
    out = tmp_path / "one.onnx"
    r = _rewrite(src, out, files["x"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert [s["dead"] for s in rep["sites"]] == [DEAD]
    assert "external_data" not in rep["output"]
    assert os.listdir(tmp_path) == ["one.onnx"]
    rel = _rel(_ort(out, files["xv"]), _ort(src, files["xv"]))
    assert rel == pytest.approx(rep["summary"]["drift_verified"]["relative_l2"], rel=1e-3, abs=1e-6)
    assert (src.parent / "weights.bin").read_bytes() == before
    assert sorted(os.listdir(src.parent)) == ["m.onnx", "weights.bin"]


def test_input_with_external_data_over_the_limit(
    files: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(onnx_load, "_PROTOBUF_LIMIT", 1024)
    out = tmp_path / "big.onnx"
    r = _rewrite(files["ext"], out, files["x"])
    assert r.exit_code == 0, r.output
    _check_published(out, json.loads(r.stdout), files["ext"], files["xv"])


def test_prune_over_the_limit_writes_external_data(
    files: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(onnx_load, "_PROTOBUF_LIMIT", 1024)
    out = tmp_path / "small.onnx"
    r = CliRunner().invoke(
        cli, ["prune", str(files["onnx"]), "-o", str(out), "--calib", str(files["x"]), "--format", "json"]
    )
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert sorted(os.listdir(tmp_path)) == ["small.onnx", "small.onnx.data"]
    assert rep["output"]["external_data"]["path"] == str(tmp_path / "small.onnx.data")
    w1 = _raw_external(out, "w1")  # the cut first layer, read from the data file
    assert w1 is not None and w1.size == (UNITS - DEAD) * 16
    y, want = _ort(out, files["xv"]), _ort(files["onnx"], files["xv"])
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-5)  # dead ReLUs output 0: pruning is exact


def test_a_failed_verification_leaves_no_pair(
    files: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from actaudit.backends.onnx import surgery

    seen: list[list[str]] = []

    def broken(self: Any, path: Any) -> onnx.ModelProto:
        seen.append(sorted(os.listdir(Path(path).parent)))  # the temporary pair, complete
        raise onnx.checker.ValidationError("simulated")

    monkeypatch.setattr(onnx_load, "_PROTOBUF_LIMIT", 1024)
    monkeypatch.setattr(surgery.OnnxSurgeon, "reload", broken)
    r = _rewrite(files["onnx"], tmp_path / "x.onnx", files["x"])
    assert r.exit_code == 1 and "does not reload" in r.stderr
    assert seen == [["x.onnx", "x.onnx.data"]]
    assert not list(tmp_path.iterdir())


def test_pair_publish_failing_at_the_model_restores_the_old_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--force over an old pair: if the model's rename fails, the old data file is put back."""
    (tmp_path / "m.onnx").write_bytes(b"old model")
    (tmp_path / "m.onnx.data").write_bytes(b"old data")
    real = fileio._publish

    def failing(tmp: Path, target: Path, replace: bool) -> None:
        if target.name == "m.onnx":
            raise OSError("simulated rename failure")
        real(tmp, target, replace)

    monkeypatch.setattr(fileio, "_publish", failing)
    pair = fileio.atomic_pair(tmp_path / "m.onnx", "m.onnx.data", force=True)
    with pytest.raises(OSError, match="simulated"), pair as tmp:
        tmp.write_bytes(b"new model")
        (tmp.parent / "m.onnx.data").write_bytes(b"new data")
    assert (tmp_path / "m.onnx").read_bytes() == b"old model"
    assert (tmp_path / "m.onnx.data").read_bytes() == b"old data"
    assert sorted(os.listdir(tmp_path)) == ["m.onnx", "m.onnx.data"]


def test_pair_publish_failing_at_the_model_removes_the_new_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = fileio._publish

    def failing(tmp: Path, target: Path, replace: bool) -> None:
        if target.name == "m.onnx":
            raise OSError("simulated rename failure")
        real(tmp, target, replace)

    monkeypatch.setattr(fileio, "_publish", failing)
    pair = fileio.atomic_pair(tmp_path / "m.onnx", "m.onnx.data")
    with pytest.raises(OSError, match="simulated"), pair as tmp:
        tmp.write_bytes(b"new model")
        (tmp.parent / "m.onnx.data").write_bytes(b"new data")
    assert not list(tmp_path.iterdir())


def test_saving_with_external_data_leaves_the_model_whole(tmp_path: Path) -> None:
    """onnx.save_model(save_as_external_data=True) empties the proto it saves; ours must not."""
    model = _model()
    before = {t.name: numpy_helper.to_array(t).copy() for t in model.graph.initializer}
    for k in (1, 2):  # a second save of the same proto once wrote a data file without the weights
        (tmp_path / str(k)).mkdir()
        onnx_session.save_external(model, str(tmp_path / str(k) / "m.onnx"), "w.bin")
        assert all(t.data_location != TensorProto.EXTERNAL for t in model.graph.initializer)
        after = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        assert after.keys() == before.keys()
        assert all(np.array_equal(after[n], before[n]) for n in before)
    sizes = {(tmp_path / str(k) / "w.bin").stat().st_size for k in (1, 2)}
    assert len(sizes) == 1  # both saves wrote every weight over onnx's 1024-byte threshold (b2 stays inline)
    assert sizes.pop() >= 4 * (UNITS * 16 + UNITS + 4 * UNITS)


def test_the_data_file_never_overwrites_the_inputs(
    files: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An input whose weights are in out.onnx.data: -o out.onnx --force beside it is refused."""
    onnx.save(
        _model(),
        str(tmp_path / "in.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="out.onnx.data",
    )
    before = (tmp_path / "out.onnx.data").read_bytes()
    monkeypatch.setattr(onnx_load, "_PROTOBUF_LIMIT", 1024)
    r = CliRunner().invoke(
        cli,
        [
            "rewrite",
            str(tmp_path / "in.onnx"),
            "-o",
            str(tmp_path / "out.onnx"),
            "--calib",
            str(files["x"]),
            "--force",
        ],
    )
    assert r.exit_code == 2, r.output
    assert "is the input's" in r.stderr
    assert (tmp_path / "out.onnx.data").read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["in.onnx", "out.onnx.data"]


def test_a_model_protobuf_cannot_size_counts_as_over_the_limit() -> None:
    """Above 2 GiB ``ByteSize`` itself raises EncodeError (measured on a 2.15 GB model); that is 'large'."""
    from google.protobuf.message import EncodeError

    class Huge:
        def ByteSize(self) -> int:
            raise EncodeError("Failed to serialize proto")

    assert onnx_load.over_limit(Huge()) is True  # type: ignore[arg-type]
    assert onnx_load.over_limit(_model()) is False
