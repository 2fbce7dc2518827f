"""Seeded ONNX models for the fault tests: a long run, a Loop with a ReLU inside, old opsets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _model(graph: onnx.GraphProto, opset: int) -> onnx.ModelProto:
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 7 if opset < 15 else 8
    onnx.checker.check_model(m)
    return m


def linear_relu(
    path: Path, opset: int, dead: tuple[int, ...] = (1, 4)
) -> tuple[Path, np.ndarray, np.ndarray]:
    """x[N,4] @ W + b -> Relu; units in ``dead`` get a bias of -1e3. Returns (path, W, b)."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 6)).astype(np.float32)
    b = np.zeros(6, np.float32)
    b[list(dead)] = -1e3
    g = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["z0"]),
            helper.make_node("Add", ["z0", "b"], ["z"]),
            helper.make_node("Relu", ["z"], ["y"]),
        ],
        "linear_relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 6])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")],
    )
    onnx.save(_model(g, opset), str(path))
    return path, w, b


def loop_model(path: Path, trips: int, width: int = 8, relu_inside: bool = True) -> Path:
    """y = Relu(... Loop of ``trips`` iterations: h = Relu(h @ W) ...) with W = 0.5·I (values shrink, stay finite).

    With ``relu_inside=False`` the body is a plain MatMul and one Relu follows the Loop:
    a long run with a single site, for the Ctrl-C test.
    """
    w = (0.5 * np.eye(width)).astype(np.float32)
    body_nodes = [helper.make_node("MatMul", ["h_in", "W"], ["m"])]
    body_nodes.append(helper.make_node("Relu" if relu_inside else "Identity", ["m"], ["h_out"]))
    body_nodes.append(helper.make_node("Identity", ["cond_in"], ["cond_out"]))
    body = helper.make_graph(
        body_nodes,
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("h_in", TensorProto.FLOAT, ["N", width]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("h_out", TensorProto.FLOAT, ["N", width]),
        ],
    )
    g = helper.make_graph(
        [
            helper.make_node("Loop", ["M", "cond", "x"], ["h"], body=body),
            helper.make_node("Relu", ["h"], ["y"]),
        ],
        "loop",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", width])],
        [
            numpy_helper.from_array(np.array(trips, np.int64), "M"),
            numpy_helper.from_array(np.array(True), "cond"),
            numpy_helper.from_array(w, "W"),
        ],
    )
    onnx.save(_model(g, 13), str(path))
    return path
