"""Random small ONNX networks over every op the bound propagation supports, for property tests.

:func:`build` turns a list of op names and a seed into a model whose every node output is
also a graph output, so onnxruntime (the independent evaluator) reports each value the
bounds describe. Spatial ops work on ``[N, C, H, W]``; the head flattens or reduces to
``[N, F]`` and ends in Gemm / MatMul layers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SPATIAL = (
    "conv",
    "conv_grouped",
    "conv1d",
    "bn",
    "scale",
    "act",
    "residual_add",
    "gate_mul",
    "self_gate",
    "concat",
    "maxpool",
    "avgpool",
    "reduce_keep",
    "identity",
    "unsqueeze_squeeze",
)
HEADS = ("flatten", "gap", "reshape", "reduce_drop", "globalmax")
DENSE = ("gemm", "matmul", "act", "scale_vec", "self_gate")
ACTS = ("Relu", "LeakyRelu", "Tanh", "Sigmoid", "Elu", "Softplus", "HardSigmoid", "HardSwish", "Clip")


class Net:
    def __init__(self, seed: int, channels: int, size: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.cur, self.shape = "x", (channels, size, size)
        self.k = 0

    def name(self, stem: str) -> str:
        self.k += 1
        return f"{stem}{self.k}"

    def const(self, a: np.ndarray, stem: str = "w") -> str:
        n = self.name(stem)
        self.inits.append(numpy_helper.from_array(np.asarray(a), n))
        return n

    def weights(self, shape: tuple[int, ...], fan: int) -> np.ndarray:
        w = self.rng.uniform(-1.5, 1.5, size=shape) / np.sqrt(fan)
        if self.rng.random() < 0.3:
            w[self.rng.random(shape) < 0.3] = 0.0  # exact zeros: 0 · inf must stay 0
        return w.astype(np.float32)

    def node(self, op: str, ins: list[str], shape: tuple[int, ...], n_out: int = 1, **attrs: Any) -> str:
        outs = [self.name(op.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op, ins, outs, name=outs[0], **attrs))
        self.cur, self.shape = outs[0], shape
        return outs[0]

    # -- spatial ops on [C, H, W] -------------------------------------------------------------
    def conv(self, groups: int = 1, x: str | None = None, out: int | None = None) -> str:
        c, h, w = self.shape
        o = out or int(self.rng.integers(1, 5)) * groups
        k = int(self.rng.integers(1, 4))
        s, p, d = int(self.rng.integers(1, 3)), int(self.rng.integers(0, 2)), int(self.rng.integers(1, 3))
        if min(h, w) + 2 * p - d * (k - 1) < 1:
            k, d = 1, 1
        ho = (h + 2 * p - d * (k - 1) - 1) // s + 1
        wo = (w + 2 * p - d * (k - 1) - 1) // s + 1
        ins = [x or self.cur, self.const(self.weights((o, c // groups, k, k), c // groups * k * k))]
        if self.rng.random() < 0.7:
            ins.append(self.const(self.rng.uniform(-1, 1, o).astype(np.float32), "b"))
        return self.node(
            "Conv",
            ins,
            (o, ho, wo),
            kernel_shape=[k, k],
            strides=[s, s],
            pads=[p] * 4,
            dilations=[d, d],
            group=groups,
        )

    def conv_grouped(self) -> str:
        c = self.shape[0]
        return self.conv(groups=c, out=c * int(self.rng.integers(1, 3)))

    def conv1d(self) -> str:
        c, h, w = self.shape
        flat = self.node("Reshape", [self.cur, self.const(np.array([0, c, -1], np.int64), "s")], (c, h * w))
        o = int(self.rng.integers(1, 4))
        wt = self.const(self.weights((o, c, 3), 3 * c))
        self.node("Conv", [flat, wt], (o, h * w), kernel_shape=[3], pads=[1, 1], strides=[1])
        return self.node("Reshape", [self.cur, self.const(np.array([0, o, h, w], np.int64), "s")], (o, h, w))

    def bn(self) -> str:
        c = self.shape[0]
        ps = [
            self.rng.uniform(-2, 2, c),
            self.rng.uniform(-1, 1, c),
            self.rng.uniform(-1, 1, c),
            self.rng.uniform(0.1, 2, c),
        ]
        return self.node(
            "BatchNormalization",
            [self.cur, *(self.const(p.astype(np.float32), "bn") for p in ps)],
            self.shape,
        )

    def scale(self, vec: bool = False) -> str:
        op = str(self.rng.choice(["Add", "Sub", "Mul", "Div"]))
        shape = (self.shape[0],) if vec else (self.shape[0], 1, 1) if self.rng.random() < 0.5 else ()
        c = self.rng.uniform(-2, 2, size=shape).astype(np.float32)
        if op == "Div":
            c = np.where(np.abs(c) < 0.2, 0.5, c).astype(np.float32)
        ins = [self.cur, self.const(c, "c")]
        if op in ("Add", "Sub", "Mul") and self.rng.random() < 0.5:
            ins.reverse()
        return self.node(op, ins, self.shape)

    def scale_vec(self) -> str:
        return self.scale(vec=True)

    def act(self) -> str:
        op = str(self.rng.choice(ACTS))
        attrs: dict[str, Any] = {}
        ins = [self.cur]
        if op == "LeakyRelu":
            attrs["alpha"] = float(self.rng.uniform(0, 0.5))
        elif op == "Elu":
            attrs["alpha"] = float(self.rng.uniform(0.1, 2))
        elif op == "HardSigmoid":
            attrs["alpha"], attrs["beta"] = float(self.rng.uniform(0.05, 1)), float(self.rng.uniform(0, 1))
        elif op == "Clip":
            lo = float(self.rng.uniform(-2, 0.5))
            ins += [
                self.const(np.array(lo, np.float32), "lo"),
                self.const(np.array(lo + self.rng.uniform(0, 3), np.float32), "hi"),
            ]
        return self.node(op, ins, self.shape, **attrs)

    def residual_add(self, op: str = "Add") -> str:
        """x op act(conv1x1(x)): two computed operands of one shape."""
        x, shape = self.cur, self.shape
        c = shape[0]
        self.node("Conv", [x, self.const(self.weights((c, c, 1, 1), c))], shape, kernel_shape=[1, 1])
        self.act()
        return self.node(op, [x, self.cur], shape)

    def gate_mul(self) -> str:
        return self.residual_add("Mul")

    def self_gate(self) -> str:
        """x · clip(x ± c) / 6 (HardSwish as exporters write it), x · hardsigmoid(x), x · relu(x)."""
        x, shape = self.cur, self.shape
        how = str(self.rng.choice(["hardswish", "hardsigmoid", "relu", "clip_scaled"]))
        if how in ("hardswish", "clip_scaled"):
            op = "Add" if how == "hardswish" else str(self.rng.choice(["Sub", "Mul", "Div"]))
            c = np.float32(3.0 if how == "hardswish" else self.rng.uniform(0.3, 2) * self.rng.choice([-1, 1]))
            ins = [x, self.const(np.array(c, np.float32), "c")]
            self.node(op, ins if op != "Add" or self.rng.random() < 0.5 else ins[::-1], shape)
            lo = 0.0 if how == "hardswish" else float(self.rng.uniform(-2, 0.5))
            hi = 6.0 if how == "hardswish" else lo + float(self.rng.uniform(0, 3))
            bounds = [self.const(np.array(v, np.float32), "b") for v in (lo, hi)]
            self.node("Clip", [self.cur, *bounds], shape)
        elif how == "hardsigmoid":
            a, b = float(self.rng.uniform(0.05, 1)), float(self.rng.uniform(0, 1))
            self.node("HardSigmoid", [x], shape, alpha=a, beta=b)
        else:
            self.node("Relu", [x], shape)
        ins = [x, self.cur] if self.rng.random() < 0.5 else [self.cur, x]
        self.node("Mul", ins, shape)
        if how == "hardswish":
            self.node("Div", [self.cur, self.const(np.array(6.0, np.float32), "c")], shape)
        return self.cur

    def concat(self) -> str:
        x, shape = self.cur, self.shape
        self.node("Relu", [x], shape)
        other = self.cur
        return self.node("Concat", [x, other], (2 * shape[0], *shape[1:]), axis=int(self.rng.choice([1, -3])))

    def _pool_geometry(self) -> tuple[int, int, int, tuple[int, int, int]]:
        c, h, w = self.shape
        k = int(self.rng.integers(1, min(3, h, w) + 1))
        s = int(self.rng.integers(1, 3))
        p = int(self.rng.integers(0, 2)) if k > 1 else 0
        return k, s, p, (c, (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1)

    def maxpool(self) -> str:
        k, s, p, shape = self._pool_geometry()
        n_out = 2 if self.rng.random() < 0.5 else 1  # indices nobody reads
        return self.node(
            "MaxPool", [self.cur], shape, n_out=n_out, kernel_shape=[k, k], strides=[s, s], pads=[p] * 4
        )

    def avgpool(self) -> str:
        k, s, p, shape = self._pool_geometry()
        cip = int(self.rng.integers(0, 2))
        return self.node(
            "AveragePool",
            [self.cur],
            shape,
            kernel_shape=[k, k],
            strides=[s, s],
            pads=[p] * 4,
            count_include_pad=cip,
        )

    def _reduce(self, axes: list[int], keep: int) -> str:
        op = str(self.rng.choice(["ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum"]))
        full = (1, *self.shape)
        shape = tuple(1 if i in axes else d for i, d in enumerate(full) if keep or i not in axes)[1:]
        return self.node(op, [self.cur, self.const(np.array(axes, np.int64), "ax")], shape, keepdims=keep)

    def reduce_keep(self) -> str:
        axes = [[2], [3], [2, 3], [-1]][int(self.rng.integers(0, 4))]
        return self._reduce(sorted(a % 4 for a in axes), 1)

    def identity(self) -> str:
        return self.node(str(self.rng.choice(["Identity", "Dropout"])), [self.cur], self.shape)

    def unsqueeze_squeeze(self) -> str:
        ax = self.const(np.array([2], np.int64), "ax")
        self.node("Unsqueeze", [self.cur, ax], (self.shape[0], 1, *self.shape[1:]))
        return self.node("Squeeze", [self.cur, ax], (self.shape[0], *self.shape[2:]))

    # -- heads to [F] and dense ops -----------------------------------------------------------
    def flatten(self) -> str:
        return self.node("Flatten", [self.cur], (int(np.prod(self.shape)),), axis=1)

    def gap(self) -> str:
        self.node("GlobalAveragePool", [self.cur], (self.shape[0], 1, 1))
        return self.flatten()

    def globalmax(self) -> str:
        self.node("GlobalMaxPool", [self.cur], (self.shape[0], 1, 1))
        return self.flatten()

    def reshape(self) -> str:
        return self.node(
            "Reshape", [self.cur, self.const(np.array([0, -1], np.int64), "s")], (int(np.prod(self.shape)),)
        )

    def reduce_drop(self) -> str:
        return self._reduce([2, 3], 0)

    def gemm(self) -> str:
        (f,) = self.shape
        o = int(self.rng.integers(1, 6))
        trans = int(self.rng.integers(0, 2))
        w = self.weights((o, f) if trans else (f, o), f)
        attrs = {
            "transB": trans,
            "alpha": float(self.rng.choice([1.0, -0.7, 1.3])),
            "beta": float(self.rng.choice([1.0, 0.5, -2.0])),
        }
        ins = [self.cur, self.const(w)]
        if self.rng.random() < 0.7:
            ins.append(self.const(self.rng.uniform(-1, 1, o).astype(np.float32), "b"))
        return self.node("Gemm", ins, (o,), **attrs)

    def matmul(self) -> str:
        (f,) = self.shape
        o = int(self.rng.integers(1, 6))
        mm = self.node("MatMul", [self.cur, self.const(self.weights((f, o), f))], (o,))
        if self.rng.random() < 0.7:
            return self.node(
                "Add", [mm, self.const(self.rng.uniform(-1, 1, o).astype(np.float32), "b")], (o,)
            )
        return mm

    def model(self, input_shape: tuple[int, ...]) -> onnx.ModelProto:
        outs = [o for n in self.nodes for o in n.output[:1]]
        g = helper.make_graph(
            self.nodes,
            "random_net",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *input_shape])],
            [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs],
            self.inits,
        )
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
        m.ir_version = 8
        return m


def build(
    spatial: list[str], head: str, dense: list[str], seed: int, channels: int, size: int
) -> onnx.ModelProto:
    net = Net(seed, channels, size)
    for op in spatial:
        getattr(net, op)()
    getattr(net, head)()
    for op in dense:
        getattr(net, op)()
    return net.model((channels, size, size))


def samples(lo: float, hi: float, shape: tuple[int, ...], n: int, seed: int) -> np.ndarray:
    """Uniform points, random vertices of the box, and its two extreme corners."""
    rng = np.random.default_rng(seed)
    uni = rng.uniform(lo, hi, size=(n, *shape))
    vert = np.where(rng.random((n, *shape)) < 0.5, lo, hi)
    corners = np.stack([np.full(shape, lo), np.full(shape, hi)])
    return np.concatenate([uni, vert, corners]).astype(np.float32)
