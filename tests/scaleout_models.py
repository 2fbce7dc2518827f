"""Seeded test models for sharded and torchrun audits, in ONNX and TorchScript, with known units.

Input ``x`` is ``[N, S]``; calibration sample ``i`` is the one-hot row ``e_i``. Site 1 is
``relu(x - 0.5)`` (an identity Linear): unit ``j`` fires on sample ``j`` and on no other,
so its fire count is the number of times sample ``j`` ran. Site 2 is a tanh over a random
Linear; site 3 a ReLU over a Linear whose first two units have a bias of -100 (dead by
construction; inputs are within [-1, 1], so the margin is ~99).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SAMPLES = 48
HIDDEN = 16
OUT = 8
DEAD = (0, 1)


def weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    w3 = rng.normal(0, 0.3, size=(HIDDEN, OUT)).astype(np.float32)
    b3 = rng.normal(0, 0.1, size=OUT).astype(np.float32)
    b3[list(DEAD)] = -100.0
    return {
        "w1": np.eye(SAMPLES, dtype=np.float32),
        "b1": np.full(SAMPLES, -0.5, dtype=np.float32),
        "w2": rng.normal(0, 1.0, size=(SAMPLES, HIDDEN)).astype(np.float32),
        "b2": rng.normal(0, 0.1, size=HIDDEN).astype(np.float32),
        "w3": w3,
        "b3": b3,
    }


def calib() -> np.ndarray:
    return np.eye(SAMPLES, dtype=np.float32)


def write_onnx(path: Path, seed: int = 0) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = weights(seed)
    inits = [numpy_helper.from_array(v, k) for k, v in w.items()]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["m1"], name="fc1"),
        helper.make_node("Add", ["m1", "b1"], ["z1"], name="fc1_bias"),
        helper.make_node("Relu", ["z1"], ["a1"], name="act1"),
        helper.make_node("MatMul", ["a1", "w2"], ["m2"], name="fc2"),
        helper.make_node("Add", ["m2", "b2"], ["z2"], name="fc2_bias"),
        helper.make_node("Tanh", ["z2"], ["a2"], name="act2"),
        helper.make_node("MatMul", ["a2", "w3"], ["m3"], name="fc3"),
        helper.make_node("Add", ["m3", "b3"], ["z3"], name="fc3_bias"),
        helper.make_node("Relu", ["z3"], ["y"], name="act3"),
    ]
    graph = helper.make_graph(
        nodes,
        "onehot",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", SAMPLES])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", OUT])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def write_torchscript(path: Path, seed: int = 0) -> Path:
    import torch
    from torch import nn

    w = weights(seed)
    m = nn.Sequential(
        nn.Linear(SAMPLES, SAMPLES),
        nn.ReLU(),
        nn.Linear(SAMPLES, HIDDEN),
        nn.Tanh(),
        nn.Linear(HIDDEN, OUT),
        nn.ReLU(),
    )
    with torch.no_grad():
        for lin, (wk, bk) in zip((m[0], m[2], m[4]), (("w1", "b1"), ("w2", "b2"), ("w3", "b3")), strict=True):
            lin.weight.copy_(torch.from_numpy(w[wk].T.copy()))
            lin.bias.copy_(torch.from_numpy(w[bk]))
    torch.jit.save(torch.jit.script(m.eval()), str(path))
    return path
