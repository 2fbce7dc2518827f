"""ONNX capture: counters against NumPy, and models as they are found in the wild.

Models are built with ``onnx.helper``; dead and saturated units are forced by biases,
so the expected verdicts are known by construction, and every counter is checked
against NumPy on the pre-activation tensors promoted in a separate session.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from test_onnx_reference import assert_matches, reference, run_tensors

import actaudit
from actaudit.backends.onnx import backend
from actaudit.backends.onnx import capture as onnx_capture
from actaudit.backends.onnx.sites import find_sites
from actaudit.data import from_arrays
from actaudit.errors import CalibrationError, InputError
from actaudit.stats import AxisOverride, Capture

RNG = np.random.default_rng(7)
DEAD = [1, 4]  # conv channels whose bias is -100: never positive
SATURATED = [2]  # sigmoid channel whose bias is +60: always stuck high


def _tensor(name: str, a: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(a, name)


def cnn(
    opset: int = 17, *, constant_nodes: bool = False, dtype: Any = np.float32, batch: int | str = "N"
) -> onnx.ModelProto:
    """Conv → Relu (2 dead) → Conv → Sigmoid (1 saturated) → pool → Gemm → Tanh; and a Clip(0, 6)."""
    rng = np.random.default_rng(0)
    w1 = (rng.standard_normal((6, 3, 3, 3)) * 0.5).astype(dtype)
    b1 = np.zeros(6, dtype)
    b1[DEAD] = -100
    w2 = (rng.standard_normal((4, 6, 1, 1)) * 0.3).astype(dtype)
    b2 = np.zeros(4, dtype)
    b2[SATURATED] = 60
    wf = (rng.standard_normal((5, 4)) * 0.5).astype(dtype)
    bf = np.zeros(5, dtype)
    consts = {
        "w1": w1,
        "b1": b1,
        "w2": w2,
        "b2": b2,
        "wf": wf,
        "bf": bf,
        "lo": np.array(0, dtype),
        "hi": np.array(6, dtype),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2"),
        helper.make_node("Sigmoid", ["c2"], ["s2"], name="gate"),
        helper.make_node("Clip", ["c2", "lo", "hi"], ["k2"], name="relu6"),
        helper.make_node("Add", ["s2", "k2"], ["a2"], name="add"),
        helper.make_node("GlobalAveragePool", ["a2"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["fl"], name="flat"),
        helper.make_node("Gemm", ["fl", "wf", "bf"], ["g"], name="fc", transB=1),
        helper.make_node("Tanh", ["g"], ["y"], name="tanh"),
    ]
    inits = []
    if constant_nodes:
        nodes = [
            helper.make_node("Constant", [], [k], value=_tensor(k, v)) for k, v in consts.items()
        ] + nodes
    else:
        inits = [_tensor(k, v) for k, v in consts.items()]
    et = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    graph = helper.make_graph(
        nodes,
        "cnn",
        [helper.make_tensor_value_info("x", et, [batch, 3, 8, 8])],
        [helper.make_tensor_value_info("y", et, [batch, 5])],
        initializer=inits,
    )
    ir = 7 if opset <= 12 else 8 if opset <= 20 else 10
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir)
    onnx.checker.check_model(model)
    return model


def images(n: int = 24, dtype: Any = np.float32) -> np.ndarray:
    return RNG.standard_normal((n, 3, 8, 8)).astype(dtype)


def run(model: Any, data: Any, **kw: Any) -> Capture:
    handle = backend.load(model)
    source = data if hasattr(data, "batches") else from_arrays([data], 8, "test")
    return backend.capture(
        handle,
        source,
        samples=kw.pop("samples", None),
        stuck_fraction=0.01,
        axis_overrides=kw.pop("overrides", []),
        **kw,
    )


def check_against_numpy(
    model: onnx.ModelProto, cap: Capture, batches: list[dict[str, np.ndarray]], slack: float = 0.0
) -> None:
    """Every site's counters equal NumPy's on the promoted pre-activation tensors."""
    handle = backend.load(model)
    sites = {s.name: s for s in find_sites(handle.model.graph).sites}
    assert cap.sites, "no sites"
    for res in cap.sites:
        site = sites[res.info.name]
        xs = [run_tensors(handle.model, [site.x], feeds)[site.x] for feeds in batches]
        ref = reference(xs, res.info.unit_axis, res.info.kind, res.info.params)
        assert_matches(res.stats, ref, count_slack=slack, name=res.info.name)


def by_name(cap: Capture) -> dict[str, Any]:
    return {s.info.name: s for s in cap.sites}


@pytest.mark.parametrize("opset", [11, 12, 13, 17, 18, 20, 21])
def test_counters_match_numpy_across_opsets(opset: int) -> None:
    model = cnn(opset)
    x = images()
    cap = run(model, x)
    assert [s.info.name for s in cap.sites] == ["relu1", "gate", "relu6", "tanh"]
    check_against_numpy(model, cap, [{"x": x[i : i + 8]} for i in range(0, 24, 8)])
    assert cap.samples == 24 and cap.batches == 3


def test_verdicts_known_by_construction() -> None:
    report = actaudit.audit(cnn(), images(32))
    sites = {v.info.name: v for v in report.sites}
    assert sites["relu1"].dead_units == DEAD
    assert sites["gate"].saturated_units == SATURATED
    assert sites["relu1"].info.unit_axis == 1 and sites["relu1"].info.units == 6
    assert sites["tanh"].info.unit_axis == 1 and sites["tanh"].info.units == 5  # Gemm → last axis


def test_weights_as_constant_nodes() -> None:
    model = cnn(13, constant_nodes=True)
    x = images(16)
    cap = run(model, x)
    assert by_name(cap)["relu6"].info.kind == "relu6"  # bounds found through Constant nodes
    check_against_numpy(model, cap, [{"x": x[:8]}, {"x": x[8:]}])


def test_float16_model_counts_in_float32() -> None:
    model = cnn(17, dtype=np.float16)
    x = images(16, np.float32)  # float inputs are cast to the model's float16
    cap = run(model, x)
    check_against_numpy(model, cap, [{"x": x[:8].astype(np.float16)}, {"x": x[8:].astype(np.float16)}])
    assert by_name(cap)["relu1"].stats.low[DEAD].tolist() == [16 * 64] * 2


def test_nonfinite_values_are_counted_and_excluded() -> None:
    model = cnn(17)
    x = images(16)
    x[3, 0, 2, 2] = np.nan
    x[9, 1, 0, 0] = np.inf
    cap = run(model, x)
    relu = by_name(cap)["relu1"].stats
    assert relu.nonfinite.sum() > 0
    check_against_numpy(model, cap, [{"x": x[:8]}, {"x": x[8:]}])


def test_symbolic_and_fixed_batch_with_split(tmp_path: Path) -> None:
    model = cnn(17, batch=4)
    x = images(16)
    cap = run(model, from_arrays([x], 16, "one batch of 16"))
    assert cap.samples == 16 and cap.batches == 1
    check_against_numpy(model, cap, [{"x": x[i : i + 4]} for i in range(0, 16, 4)])
    cap = run(model, from_arrays([x[:10]], 10, "ten"))
    assert cap.samples == 8 and any("fixed at 4" in w for w in cap.warnings)
    with pytest.raises(CalibrationError, match="fixed at 4"):
        run(model, from_arrays([x[:3]], 3, "three"))


def test_fixed_leading_dims_are_not_split_when_the_batch_axis_is_free() -> None:
    """A state input [1, 4] beside a free batch axis: a wrong state shape is an error, not a split."""
    nodes = [
        helper.make_node("Add", ["x", "state"], ["s"]),
        helper.make_node("Relu", ["s"], ["y"], name="relu"),
    ]
    graph = helper.make_graph(
        nodes,
        "state",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4]),
            helper.make_tensor_value_info("state", TensorProto.FLOAT, [1, 4]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = RNG.standard_normal((6, 4)).astype(np.float32)
    cap = run(model, _batches([([x, np.zeros((1, 4), np.float32)], {})]))
    assert cap.samples == 6 and cap.batches == 1
    with pytest.raises(
        CalibrationError, match=r"input 'state' has shape \[6, 4\] but the model expects \[1, 4\]"
    ):
        run(model, _batches([([x, np.zeros((6, 4), np.float32)], {})]))


def test_synthetic_inputs_with_input_shape(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    model = cnn(17, batch="N")
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "H"
    model.graph.input[0].type.tensor_type.shape.dim[3].dim_param = "W"
    onnx.save(model, path)
    with pytest.raises(InputError, match="input-shape"):
        actaudit.audit(str(path))
    report = actaudit.audit(str(path), input_shapes=["x=1x3x6x5"], samples=8, batch_size=4)
    assert report.sites[0].info.sample_shape == (6, 6, 5)


def test_samples_cap_and_torch_tensors() -> None:
    torch = pytest.importorskip("torch")
    x = images(20)
    src = _batches([([torch.from_numpy(x[:12])], {}), ([], {"x": torch.from_numpy(x[12:])})])
    cap = run(cnn(17), src, samples=15)
    assert cap.samples == 15 and cap.batches == 2
    check_against_numpy(cnn(17), cap, [{"x": x[:12]}, {"x": x[12:15]}])


def test_input_file_is_not_modified(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    onnx.save(cnn(17), path)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    proto = onnx.load(path)
    actaudit.audit(str(path), images(8))
    actaudit.audit(proto, images(8))
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    assert proto == onnx.load(path)  # the caller's ModelProto is untouched too
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_external_data_next_to_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "models"
    d.mkdir()
    onnx.save(cnn(17), d / "m.onnx", save_as_external_data=True, location="m.weights", size_threshold=0)
    monkeypatch.chdir(tmp_path)  # the model lives elsewhere than the working directory
    report = actaudit.audit(str(d / "m.onnx"), images(8))
    assert report.sites[0].dead_units == DEAD
    (d / "m.weights").rename(d / "gone")
    with pytest.raises(InputError, match=r"m\.weights"):
        actaudit.audit(str(d / "m.onnx"), images(8))
    bare = onnx.load(d / "m.onnx", load_external_data=False)
    with pytest.raises(InputError, match="external data"):
        backend.load(bare)


def test_provider_and_threads_validation() -> None:
    with pytest.raises(InputError, match="CPUExecutionProvider"):
        backend.load(cnn(), provider="NoSuchExecutionProvider")
    assert backend.load(cnn(), provider="cpu").provider == "CPUExecutionProvider"
    with pytest.raises(InputError, match="threads"):
        backend.load(cnn(), threads=0)
    report = actaudit.audit(cnn(), images(8), threads=1, provider="CPUExecutionProvider")
    assert report.sites[0].dead_units == DEAD


def two_inputs() -> onnx.ModelProto:
    """Token ids (int64) through an embedding, a float feature input and a scalar gain."""
    emb = np.random.default_rng(1).standard_normal((10, 6)).astype(np.float32)
    bias = np.zeros(6, np.float32)
    bias[0] = -50  # dead feature
    w = np.eye(6, dtype=np.float32)
    nodes = [
        helper.make_node("Gather", ["emb", "ids"], ["e"]),  # [N, T, 6]
        helper.make_node("Add", ["e", "feat"], ["ef"]),
        helper.make_node("Mul", ["ef", "gain"], ["efg"]),
        helper.make_node("MatMul", ["efg", "w"], ["m"]),
        helper.make_node("Add", ["m", "bias"], ["mb"]),
        helper.make_node("Relu", ["mb"], ["y"], name="ffn_relu"),
    ]
    graph = helper.make_graph(
        nodes,
        "tok",
        [
            helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", "T"]),
            helper.make_tensor_value_info("feat", TensorProto.FLOAT, ["N", "T", 6]),
            helper.make_tensor_value_info("gain", TensorProto.FLOAT, []),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "T", 6])],
        initializer=[_tensor("emb", emb), _tensor("bias", bias), _tensor("w", w)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_several_inputs_including_integers() -> None:
    model = two_inputs()
    ids = RNG.integers(0, 10, (12, 5)).astype(np.int32)  # int32 given, int64 expected: cast
    feat = RNG.standard_normal((12, 5, 6)).astype(np.float64)
    gain = np.float32(2.0)
    cap = run(model, _batches([([], {"ids": ids, "feat": feat, "gain": gain})]))
    site = cap.sites[0]
    assert site.info.unit_axis == 2 and site.info.units == 6  # MatMul → last axis, through Add
    check_against_numpy(
        model, cap, [{"ids": ids.astype(np.int64), "feat": feat.astype(np.float32), "gain": np.array(gain)}]
    )
    positional = run(model, _batches([([ids, feat, 2.0], {})]))
    np.testing.assert_array_equal(positional.sites[0].stats.low, site.stats.low)
    with pytest.raises(CalibrationError, match=r"needs inputs gain"):
        run(model, from_arrays({"ids": ids, "feat": feat}, 6, "two of three"))
    with pytest.raises(CalibrationError, match="not inputs of the model"):
        run(model, from_arrays({"ids": ids, "feat": feat, "gains": feat}, 6, "typo"))
    with pytest.raises(CalibrationError, match=r"input 'ids' is float"):
        run(model, _batches([([feat[..., 0], feat, gain], {})]))
    with pytest.raises(CalibrationError, match=r"expects \['\?', '\?', 6\]"):
        run(model, _batches([([ids, feat[..., :4], gain], {})]))


def _batches(items: list[Any]) -> Any:
    from actaudit.data import DataSource

    return DataSource(lambda: iter(items), "test batches")


def test_axis_override_and_bad_axis() -> None:
    model = two_inputs()
    ids = RNG.integers(0, 10, (4, 5))
    feat = RNG.standard_normal((4, 5, 6)).astype(np.float32)
    src = _batches([([ids, feat, np.float32(1.0)], {})])
    cap = run(model, src, overrides=[AxisOverride("ffn_*", 1)])
    assert cap.sites[0].info.unit_axis == 1 and cap.sites[0].info.units == 5
    with pytest.raises(InputError, match="3-d activation"):
        run(model, src, overrides=[AxisOverride("ffn_relu", 3)])


def branchy(opset: int = 17) -> onnx.ModelProto:
    """``If(flag)``: then-branch Relu (channel 0 dead), else-branch Tanh; then a Loop of 3 Relu steps."""
    b = np.array([-100, 0, 0], np.float32)
    then_g = helper.make_graph(
        [
            helper.make_node("Add", ["x", "b"], ["xb"]),
            helper.make_node("Relu", ["xb"], ["t_out"], name="then_relu"),
        ],
        "then",
        [],
        [helper.make_tensor_value_info("t_out", TensorProto.FLOAT, None)],
    )
    else_g = helper.make_graph(
        [helper.make_node("Tanh", ["x"], ["e_out"], name="else_tanh")],
        "else",
        [],
        [helper.make_tensor_value_info("e_out", TensorProto.FLOAT, None)],
    )
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Sub", ["h_in", "half"], ["hm"]),
            helper.make_node("Relu", ["hm"], ["h_out"], name="loop_relu"),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("h_in", TensorProto.FLOAT, None),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("h_out", TensorProto.FLOAT, None),
        ],
    )
    nodes = [
        helper.make_node("If", ["flag"], ["u"], name="branch", then_branch=then_g, else_branch=else_g),
        helper.make_node("Loop", ["trips", "", "u"], ["y"], name="loop", body=body),
    ]
    graph = helper.make_graph(
        nodes,
        "branchy",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info("flag", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        initializer=[
            _tensor("b", b),
            _tensor("half", np.array(0.5, np.float32)),
            _tensor("trips", np.array(3, np.int64)),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model, full_check=True)
    return model


def _loop_reference(x: np.ndarray, flag: bool) -> tuple[list[np.ndarray], list[np.ndarray]]:
    u = np.maximum(x + np.array([-100, 0, 0], np.float32), 0) if flag else np.tanh(x)
    pre = []
    for _ in range(3):
        hm = (u - np.float32(0.5)).astype(np.float32)
        pre.append(hm)
        u = np.maximum(hm, 0)
    branch_pre = [x + np.array([-100, 0, 0], np.float32)] if flag else [x]
    return branch_pre, pre


@pytest.mark.parametrize("opset", [13, 18])
def test_if_branches_and_loop_bodies_are_audited(opset: int) -> None:
    model = branchy(opset)
    x = RNG.standard_normal((10, 3)).astype(np.float32)
    only_then = _batches([([x, np.array(True)], {})])
    cap = run(model, only_then)
    names = [s.info.name for s in cap.sites]
    assert names == ["then_relu", "loop_relu"]
    assert [(u.name, "never ran" in u.reason) for u in cap.uncovered] == [("else_tanh", True)]
    sites = by_name(cap)
    branch_pre, loop_pre = _loop_reference(x, True)
    assert_matches(sites["then_relu"].stats, reference(branch_pre, 1, "relu"))
    assert_matches(sites["loop_relu"].stats, reference(loop_pre, 1, "relu"))  # three iterations, one site
    assert sites["then_relu"].stats.samples == 10 and sites["loop_relu"].stats.samples == 10
    both = run(model, _batches([([x, np.array(True)], {}), ([x, np.array(False)], {})]))
    assert [s.info.name for s in both.sites] == ["then_relu", "loop_relu", "else_tanh"] and not both.uncovered
    tanh_pre, loop_pre_2 = _loop_reference(x, False)
    assert_matches(by_name(both)["else_tanh"].stats, reference(tanh_pre, 1, "tanh"))
    assert_matches(by_name(both)["loop_relu"].stats, reference(loop_pre + loop_pre_2, 1, "relu"))


def test_scan_bodies_are_listed_not_dropped() -> None:
    body = helper.make_graph(
        [
            helper.make_node("Add", ["s_in", "x_t"], ["s_out"]),
            helper.make_node("Relu", ["s_out"], ["y_t"], name="scan_relu"),
        ],
        "body",
        [
            helper.make_tensor_value_info("s_in", TensorProto.FLOAT, [3]),
            helper.make_tensor_value_info("x_t", TensorProto.FLOAT, [3]),
        ],
        [
            helper.make_tensor_value_info("s_out", TensorProto.FLOAT, [3]),
            helper.make_tensor_value_info("y_t", TensorProto.FLOAT, [3]),
        ],
    )
    graph = helper.make_graph(
        [
            helper.make_node("Scan", ["s0", "x"], ["s", "ys"], num_scan_inputs=1, body=body),
            helper.make_node("Relu", ["ys"], ["y"], name="top_relu"),
        ],
        "scan",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        initializer=[_tensor("s0", np.zeros(3, np.float32))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    cap = run(model, RNG.standard_normal((6, 3)).astype(np.float32))
    assert [s.info.name for s in cap.sites] == ["top_relu"]
    assert [u.name for u in cap.uncovered] == ["scan_relu"] and "Scan" in cap.uncovered[0].reason


def test_custom_domains_that_onnxruntime_runs() -> None:
    """A com.microsoft Gelu is audited; an activation fused into FusedConv is listed; a local function is inlined."""
    w = np.random.default_rng(3).standard_normal((4, 3, 1, 1)).astype(np.float32)
    fn = helper.make_function(
        "my.domain",
        "Act",
        ["a"],
        ["b"],
        [helper.make_node("Relu", ["a"], ["b"], name="inner_relu")],
        [helper.make_opsetid("", 17)],
    )
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        helper.make_node("Gelu", ["c"], ["g"], name="ms_gelu", domain="com.microsoft"),
        helper.make_node("Act", ["g"], ["a"], name="custom_act", domain="my.domain"),
        helper.make_node(
            "FusedConv", ["a", "w2", "b2"], ["y"], name="fused", domain="com.microsoft", activation="Relu"
        ),
    ]
    graph = helper.make_graph(
        nodes,
        "custom",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[
            _tensor("w", w),
            _tensor("w2", np.ones((2, 4, 1, 1), np.float32)),
            _tensor("b2", np.zeros(2, np.float32)),
        ],
    )
    model = helper.make_model(
        graph,
        opset_imports=[
            helper.make_opsetid("", 17),
            helper.make_opsetid("com.microsoft", 1),
            helper.make_opsetid("my.domain", 1),
        ],
        functions=[fn],
    )
    x = RNG.standard_normal((6, 3, 4, 4)).astype(np.float32)
    cap = run(model, x)
    assert [(s.info.name[:10], s.info.kind) for s in cap.sites] == [
        ("ms_gelu", "gelu"),
        ("inner_relu", "relu"),
    ]
    assert [u.name for u in cap.uncovered] == ["fused"] and "FusedConv" in cap.uncovered[0].reason
    c = x.transpose(0, 2, 3, 1) @ w[:, :, 0, 0].T
    assert_matches(by_name(cap)["ms_gelu"].stats, reference([c.transpose(0, 3, 1, 2)], 1, "gelu"))


def test_bad_files_are_input_errors(tmp_path: Path) -> None:
    p = tmp_path / "junk.onnx"
    p.write_bytes(b"\x08\x07not a model at all")
    with pytest.raises(InputError):
        actaudit.audit(str(p), images(4))


def test_careful_variant_gives_the_same_counters(monkeypatch: pytest.MonkeyPatch) -> None:
    """Above 2**24 elements per unit and call, float32 counts could be inexact: the int32 variant runs instead."""
    model = cnn(17)
    x = images(16)
    fast = run(model, x)
    monkeypatch.setattr(onnx_capture, "_EXACT_FLOAT_COUNT", 10)
    seen: list[int] = []
    careful = run(model, x, progress=seen.append)
    assert seen == [8, 8]
    for a, b in zip(fast.sites, careful.sites, strict=True):
        for k in ("low", "high", "nonfinite", "min", "max"):
            np.testing.assert_array_equal(getattr(a.stats, k), getattr(b.stats, k))
        np.testing.assert_allclose(a.stats.neg_sum, b.stats.neg_sum, rtol=1e-4, atol=1e-4)
    check_against_numpy(model, careful, [{"x": x[:8]}, {"x": x[8:]}])


def test_only_per_unit_vectors_leave_the_graph() -> None:
    """The instrumented session adds a few numbers per unit as outputs, never an activation tensor."""
    handle = backend.load(cnn(17))
    runner = onnx_capture._Runner(handle, 0.01, [])
    sess, outs, _ = runner.session(False)
    added = [n for o in outs.values() for n in o.names.values()]
    assert sorted(o.name for o in sess.get_outputs()) == sorted([*added, "y"])  # y: the model's own output
    values = sess.run(added, {"x": images(32)})
    assert max(v.size for v in values) <= 6  # at most one value per unit (6 units), or the 4-d shape
