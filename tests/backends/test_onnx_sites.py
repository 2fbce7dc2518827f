"""Which ONNX nodes are sites: single ops, exporters' patterns, unit axes and names."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from actaudit.backends.onnx.axes import CONV, LINEAR
from actaudit.backends.onnx.sites import find_sites


def graph(
    nodes: list[onnx.NodeProto], consts: dict[str, Any] | None = None, rank: int = 2
) -> onnx.GraphProto:
    inits = [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in (consts or {}).items()]
    return helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *[4] * (rank - 1)])],
        [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, None)],
        initializer=inits,
    )


def kinds(g: onnx.GraphProto) -> list[tuple[str, str, dict[str, float]]]:
    return [(s.act.kind, s.x, dict(s.act.params)) for s in find_sites(g).sites]


N = helper.make_node


@pytest.mark.parametrize(
    ("node", "expected"),
    [
        (N("Relu", ["x"], ["y"]), ("relu", {})),
        (N("LeakyRelu", ["x"], ["y"], alpha=0.2), ("leaky_relu", {"negative_slope": 0.2})),
        (N("LeakyRelu", ["x"], ["y"]), ("leaky_relu", {"negative_slope": 0.01})),
        (N("Elu", ["x"], ["y"], alpha=0.3), ("elu", {"alpha": 0.3})),
        (N("Selu", ["x"], ["y"]), ("selu", {})),
        (N("Celu", ["x"], ["y"], alpha=0.5), ("celu", {"alpha": 0.5})),
        (N("Gelu", ["x"], ["y"]), ("gelu", {})),
        (N("Mish", ["x"], ["y"]), ("mish", {})),
        (N("Softplus", ["x"], ["y"]), ("softplus", {})),
        (N("HardSwish", ["x"], ["y"]), ("hardswish", {})),
        (N("Sigmoid", ["x"], ["y"]), ("sigmoid", {})),
        (N("Tanh", ["x"], ["y"]), ("tanh", {})),
        (N("Softsign", ["x"], ["y"]), ("softsign", {})),
        (N("HardSigmoid", ["x"], ["y"], alpha=1 / 6), ("hardsigmoid", {})),
        (N("HardSigmoid", ["x"], ["y"]), ("hardsigmoid", {"alpha": 0.2, "beta": 0.5})),  # ONNX default slope
    ],
)
def test_single_ops(node: onnx.NodeProto, expected: tuple[str, dict[str, float]]) -> None:
    assert kinds(graph([node])) == [(expected[0], "x", expected[1])]


@pytest.mark.parametrize(
    ("lo", "hi", "expected"),
    [
        (0.0, 6.0, "relu6"),
        (-1.0, 1.0, "hardtanh"),
        (0.0, None, "relu"),
        (1e-10, None, None),
        (None, 3.0, "clip"),
    ],
)
def test_clip_with_constant_bounds(lo: float | None, hi: float | None, expected: str | None) -> None:
    nodes = []
    ins = ["x", "", ""]
    for i, (name, v) in enumerate((("lo", lo), ("hi", hi)), start=1):
        if v is not None:  # bounds as Constant nodes, as exporters write them
            nodes.append(
                N("Constant", [], [name], value=numpy_helper.from_array(np.array(v, np.float32), name))
            )
            ins[i] = name
    nodes.append(N("Clip", ins, ["y"]))
    got = [k for k, _, _ in kinds(graph(nodes))]
    assert got == ([expected] if expected else [])


def test_clip_with_a_runtime_bound_is_not_a_site() -> None:
    g = graph([N("ReduceMax", ["x"], ["m"], keepdims=1), N("Clip", ["x", "", "m"], ["y"])])
    assert kinds(g) == []


def test_silu_is_one_site_and_a_gate_of_something_else_is_a_sigmoid() -> None:
    g = graph([N("Sigmoid", ["x"], ["s"]), N("Mul", ["s", "x"], ["y"])])
    assert kinds(g) == [("silu", "x", {})]
    g = graph([N("Relu", ["x"], ["r"]), N("Sigmoid", ["x"], ["s"]), N("Mul", ["r", "s"], ["y"])])
    assert [k for k, _, _ in kinds(g)] == ["relu", "sigmoid"]


@pytest.mark.parametrize("order", ["torchscript", "dynamo"])
def test_erf_gelu_pattern(order: str) -> None:
    if order == "torchscript":  # x * (1 + erf(x / √2)) * 0.5
        nodes = [
            N("Div", ["x", "r2"], ["d"]),
            N("Erf", ["d"], ["e"]),
            N("Add", ["e", "one"], ["a"]),
            N("Mul", ["x", "a"], ["m"]),
            N("Mul", ["m", "half"], ["y"]),
        ]
    else:  # x * (0.5 * (erf(x / √2) + 1))
        nodes = [
            N("Div", ["x", "r2"], ["d"]),
            N("Erf", ["d"], ["e"]),
            N("Add", ["e", "one"], ["a"]),
            N("Mul", ["half", "a"], ["m"]),
            N("Mul", ["x", "m"], ["y"]),
        ]
    g = graph(nodes, {"r2": 2**0.5, "one": 1.0, "half": 0.5})
    assert kinds(g) == [("gelu", "x", {})]


def test_tanh_gelu_pattern_has_no_tanh_site() -> None:
    nodes = [
        N("Pow", ["x", "three"], ["p"]),
        N("Mul", ["c1", "p"], ["cp"]),
        N("Add", ["x", "cp"], ["i"]),
        N("Mul", ["c2", "i"], ["ti"]),
        N("Tanh", ["ti"], ["t"]),
        N("Add", ["t", "one"], ["a"]),
        N("Mul", ["half", "a"], ["h"]),
        N("Mul", ["x", "h"], ["y"]),
    ]
    g = graph(nodes, {"three": 3.0, "c1": 0.044715, "c2": 0.7978845608, "one": 1.0, "half": 0.5})
    assert kinds(g) == [("gelu", "x", {"tanh": 1.0})]  # the tanh form's own flat tail


def test_mish_hardswish_and_softsign_patterns() -> None:
    mish = graph([N("Softplus", ["x"], ["sp"]), N("Tanh", ["sp"], ["t"]), N("Mul", ["x", "t"], ["y"])])
    assert kinds(mish) == [("mish", "x", {})]
    hs = graph([N("HardSigmoid", ["x"], ["h"], alpha=1 / 6), N("Mul", ["x", "h"], ["y"])])
    assert kinds(hs) == [("hardswish", "x", {})]
    clip = graph(
        [
            N("Add", ["x", "three"], ["a"]),
            N("Clip", ["a", "zero", "six"], ["c"]),
            N("Mul", ["x", "c"], ["m"]),
            N("Div", ["m", "six"], ["y"]),
        ],
        {"three": 3.0, "zero": 0.0, "six": 6.0},
    )
    assert kinds(clip) == [("hardswish", "x", {})]  # PP-OCR's spelling; not a relu6 site
    hsig = graph(
        [
            N("Add", ["x", "three"], ["a"]),
            N("Clip", ["a", "zero", "six"], ["c"]),
            N("Div", ["c", "six"], ["y"]),
        ],
        {"three": 3.0, "zero": 0.0, "six": 6.0},
    )
    assert kinds(hsig) == [("hardsigmoid", "x", {})]
    ss = graph(
        [N("Abs", ["x"], ["ab"]), N("Add", ["ab", "one"], ["a"]), N("Div", ["x", "a"], ["y"])], {"one": 1.0}
    )
    assert kinds(ss) == [("softsign", "x", {})]


def test_prelu_slopes_per_unit() -> None:
    g = graph([N("PRelu", ["x", "slope"], ["y"])], {"slope": [0.1, 0.0, 0.25, 0.5]})
    (site,) = find_sites(g).sites
    assert site.act.kind == "prelu" and site.unit_slopes == pytest.approx([0.1, 0.0, 0.25, 0.5])


def test_unit_tags_follow_producers_through_carriers() -> None:
    w = np.ones((4, 3, 1, 1), np.float32)
    nodes = [
        N("Conv", ["x", "w"], ["c"]),
        N("BatchNormalization", ["c", "s", "b", "b", "s"], ["bn"]),
        N("Add", ["bn", "c"], ["res"]),
        N("Relu", ["res"], ["r"]),
        N("Transpose", ["r"], ["t"], perm=[0, 2, 3, 1]),
        N("Relu", ["t"], ["r2"]),
        N("MatMul", ["r2", "m"], ["mm"]),
        N("Add", ["mm", "bias"], ["mb"]),
        N("Tanh", ["mb"], ["y"]),
    ]
    inits = {"w": w, "s": np.ones(4), "b": np.zeros(4), "m": np.ones((4, 2)), "bias": np.zeros(2)}
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()],
    )
    assert [s.tag for s in find_sites(g).sites] == [CONV, None, LINEAR]


def test_names_from_dynamo_metadata_and_reused_modules() -> None:
    def node(op: str, x: str, y: str, scopes: list[str], classes: list[str]) -> onnx.NodeProto:
        n = N(op, [x], [y], name=f"node_{y}")
        for key, value in (
            ("pkg.torch.onnx.name_scopes", scopes),
            ("pkg.torch.onnx.class_hierarchy", classes),
        ):
            n.metadata_props.append(onnx.StringStringEntryProto(key=key, value=repr(value)))
        return n

    relu_mod = ["M", "Block", "torch.nn.modules.activation.ReLU", "aten.relu.default"]
    nodes = [
        node("Relu", "x", "a", ["", "blk", "blk.relu", "relu"], relu_mod),
        node("Relu", "a", "b", ["", "blk", "blk.relu", "relu_1"], relu_mod),
        node("Sigmoid", "b", "c", ["", "blk", "sigmoid"], ["M", "Block", "aten.sigmoid.default"]),
        N("Tanh", ["c"], ["y"]),  # no metadata: the node's output name
    ]
    names = [s.name for s in find_sites(graph(nodes)).sites]
    assert names == ["blk.relu#0", "blk.relu#1", "blk/sigmoid", "y"]


def test_groupnorm_reshape_round_trip_and_pooling_keep_conv_units() -> None:
    """Conv → MaxPool → Relu; Conv → Reshape → InstanceNorm → Reshape(Shape(conv)) → Relu: both conv layout."""
    nodes = [
        N("Conv", ["x", "w"], ["c"]),
        N("MaxPool", ["c"], ["p"], kernel_shape=[2]),
        N("Relu", ["p"], ["r"]),
        N("Reshape", ["c", "groups"], ["g"]),
        N("InstanceNormalization", ["g", "s", "b"], ["n"]),
        N("Shape", ["c"], ["cs"]),
        N("Reshape", ["n", "cs"], ["back"]),
        N("Relu", ["back"], ["y"]),
        N("LSTM", ["r", "W", "R"], ["h"], hidden_size=2),
    ]
    inits = [
        numpy_helper.from_array(np.ones((6, 2, 3), np.float32), "w"),
        numpy_helper.from_array(np.array([0, 2, -1], np.int64), "groups"),
        numpy_helper.from_array(np.ones(2, np.float32), "s"),
        numpy_helper.from_array(np.zeros(2, np.float32), "b"),
        numpy_helper.from_array(np.ones((1, 8, 6), np.float32), "W"),
        numpy_helper.from_array(np.ones((1, 8, 2), np.float32), "R"),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=inits,
    )
    sites = find_sites(g).sites
    assert [(s.act.kind, s.tag) for s in sites if s.uncovered is None] == [("relu", CONV), ("relu", CONV)]
    (lstm,) = [s for s in sites if s.uncovered]
    assert lstm.op == "LSTM" and "inside the LSTM op" in lstm.uncovered


def test_int8_consumer_decides_the_axis(tmp_path) -> None:
    """An activation whose producer says nothing reaches its Conv through DynamicQuantizeLinear in
    a dynamically quantized model: the ConvInteger consumer still fixes axis 1, as Conv does in fp32."""
    import warnings

    from onnxruntime.quantization import QuantType, quantize_dynamic

    import actaudit

    rng = np.random.RandomState(21)
    w = rng.randn(2, 4, 1).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Conv", ["r", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2, 5])],
        [numpy_helper.from_array(w, "w")],
    )
    fp32, int8 = tmp_path / "m.onnx", tmp_path / "m.int8.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(fp32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
    assert "ConvInteger" in [n.op_type for n in onnx.load(str(int8)).graph.node]
    x = (rng.randn(16, 4, 5) + np.array([-3.0, -0.2, 0.3, 3.0])[None, :, None]).astype(np.float32)
    want = (x > 0).transpose(0, 2, 1).reshape(-1, 4).mean(axis=0)
    for path in (fp32, int8):
        [site] = actaudit.audit(str(path), x).sites
        assert (site.info.units, site.info.unit_axis, site.info.unit_axis_source) == (4, 1, "consumer")
        np.testing.assert_allclose(site.fire_rate, want, atol=1e-6)
