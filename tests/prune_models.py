"""Seeded models for the prune tests, with dead and constant units known by construction.

One network, built as ONNX (by hand, with ``onnx.helper``) and as a PyTorch module (for
TorchScript and ``.pt2``). Input: ``[N, 3, 8, 8]`` in [0, 1]. Every weight has
``|w| <= 0.25``, so a bias of ±100 decides a unit's sign for every input in the box.

    x ─ c1 3→8 k3 pad1 ─ BN ─ Relu      s1: dead {1, 4}              (BN β = -100)
      ─ c2 8→6 k1 ─ Clip(0, 6)          s2: dead {0}, stuck at 6 {3}  (bias ∓100)
      ├ c3 6→4 k1 (Constant weight) ─ Relu        s3: dead {2}
      ├ c4 6→4 k1 ─ Relu                          s4: none dead
      └ c6 6→4 k1 ─ Relu                          s5: dead {1}: feeds a residual Add (kept)
    Concat(s3, s4) ─ GAP ─ Flatten ─ Gemm g1 8→6 ─ Tanh   s7: stuck at 1 {0} (bias +100)
      ─ Gemm g2 6→3 ─ out_a
    Add(s4, s5) ─ GAP ─ Flatten ─ MatMul 4→5 + Add ─ Relu  s6: dead {4}: a model output (kept)
"""

from __future__ import annotations

from typing import Any

import numpy as np

SHAPES = {
    "c1.w": (8, 3, 3, 3),
    "c1.b": (8,),
    "bn.scale": (8,),
    "bn.bias": (8,),
    "bn.mean": (8,),
    "bn.var": (8,),
    "c2.w": (6, 8, 1, 1),
    "c2.b": (6,),
    "c3.w": (4, 6, 1, 1),
    "c3.b": (4,),
    "c4.w": (4, 6, 1, 1),
    "c4.b": (4,),
    "c6.w": (4, 6, 1, 1),
    "c6.b": (4,),
    "g1.w": (6, 8),
    "g1.b": (6,),
    "g2.w": (3, 6),
    "g2.b": (3,),
    "m.w": (4, 5),
    "m.b": (5,),
}
DEAD = {"s1": [1, 4], "s2": [0], "s3": [2], "s5": [1], "s6": [4]}
STUCK_HIGH = {"s2": [3], "s7": [0]}
# Tensor shapes once s1 {1,4}, s2 {0,3}, s3 {2}, s7 {0} are gone (s5, s6 are kept): by hand.
PRUNED = {
    "c1.w": (6, 3, 3, 3),
    "c1.b": (6,),
    "bn.scale": (6,),
    "bn.bias": (6,),
    "bn.mean": (6,),
    "bn.var": (6,),
    "c2.w": (4, 6, 1, 1),
    "c2.b": (4,),
    "c3.w": (3, 4, 1, 1),
    "c3.b": (3,),
    "c4.w": (4, 4, 1, 1),
    "c4.b": (4,),
    "c6.w": (4, 4, 1, 1),
    "c6.b": (4,),
    "g1.w": (5, 7),
    "g1.b": (5,),
    "g2.w": (3, 5),
    "g2.b": (3,),
    "m.w": (4, 5),
    "m.b": (5,),
}
KEPT_REASON = {"s5": "residual", "s6": "model output"}


def weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    w = {k: rng.uniform(-0.25, 0.25, size=s).astype(np.float32) for k, s in SHAPES.items()}
    w["bn.scale"] = rng.uniform(0.5, 1.5, size=8).astype(np.float32)
    w["bn.var"] = rng.uniform(0.5, 1.5, size=8).astype(np.float32)
    w["bn.mean"] = rng.uniform(-0.1, 0.1, size=8).astype(np.float32)
    w["bn.bias"] = rng.uniform(0.2, 0.5, size=8).astype(np.float32)  # live units lean positive
    for k in ("c2.b", "c3.b", "c4.b", "c6.b", "g1.b", "m.b"):
        w[k] = rng.uniform(0.2, 0.5, size=SHAPES[k]).astype(np.float32)
    for k in ("c3.w", "c4.w", "c6.w"):
        w[k][:, STUCK_HIGH["s2"]] = 0.02  # the channel stuck at 6 must not silence its readers
    w["bn.bias"][DEAD["s1"]] = -100.0
    w["c2.b"][DEAD["s2"]] = -100.0
    w["c2.b"][STUCK_HIGH["s2"]] = 100.0
    w["c3.b"][DEAD["s3"]] = -100.0
    w["c6.b"][DEAD["s5"]] = -100.0
    w["g1.b"][STUCK_HIGH["s7"]] = 100.0
    w["m.b"][DEAD["s6"]] = -100.0
    return w


def calib(n: int = 64, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, size=(n, 3, 8, 8)).astype(np.float32)


def build_onnx(path: Any, seed: int = 0) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = weights(seed)
    inits = [numpy_helper.from_array(v, k) for k, v in w.items() if k != "c3.w"]
    inits.append(numpy_helper.from_array(np.array([0, -1], dtype=np.int64), "flat"))
    inits.append(numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"))
    inits.append(numpy_helper.from_array(np.array(6.0, dtype=np.float32), "six"))
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "c1.w", "c1.b"], ["c1"], name="c1", pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        n(
            "BatchNormalization",
            ["c1", "bn.scale", "bn.bias", "bn.mean", "bn.var"],
            ["bn"],
            name="bn",
            epsilon=1e-5,
        ),
        n("Relu", ["bn"], ["s1"], name="s1"),
        n("Conv", ["s1", "c2.w", "c2.b"], ["c2"], name="c2"),
        n("Clip", ["c2", "zero", "six"], ["s2"], name="s2"),
        n("Constant", [], ["c3.w"], name="c3w", value=numpy_helper.from_array(w["c3.w"])),
        n("Conv", ["s2", "c3.w", "c3.b"], ["c3"], name="c3"),
        n("Relu", ["c3"], ["s3"], name="s3"),
        n("Conv", ["s2", "c4.w", "c4.b"], ["c4"], name="c4"),
        n("Relu", ["c4"], ["s4"], name="s4"),
        n("Conv", ["s2", "c6.w", "c6.b"], ["c6"], name="c6"),
        n("Relu", ["c6"], ["s5"], name="s5"),
        n("Concat", ["s3", "s4"], ["cat"], name="cat", axis=1),
        n("GlobalAveragePool", ["cat"], ["gap1"], name="gap1"),
        n("Flatten", ["gap1"], ["f1"], name="f1", axis=1),
        n("Gemm", ["f1", "g1.w", "g1.b"], ["g1"], name="g1", transB=1),
        n("Tanh", ["g1"], ["s7"], name="s7"),
        n("Gemm", ["s7", "g2.w", "g2.b"], ["out_a"], name="g2", transB=1),
        n("Add", ["s4", "s5"], ["res"], name="res"),
        n("GlobalAveragePool", ["res"], ["gap2"], name="gap2"),
        n("Reshape", ["gap2", "flat"], ["f2"], name="f2"),
        n("MatMul", ["f2", "m.w"], ["mm"], name="mm"),
        n("Add", ["mm", "m.b"], ["mmb"], name="mmb"),
        n("Relu", ["mmb"], ["out_b"], name="s6"),
    ]
    g = helper.make_graph(
        nodes,
        "prune_net",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [
            helper.make_tensor_value_info("out_a", TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info("out_b", TensorProto.FLOAT, ["N", 5]),
        ],
        inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, str(path))
