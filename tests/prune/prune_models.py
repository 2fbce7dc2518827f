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
import torch
from torch import nn

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


TORCH_KEYS = {"bn.scale": "bn.weight", "bn.mean": "bn.running_mean", "bn.var": "bn.running_var"}


def torch_key(k: str) -> str:
    """ONNX initializer name -> state-dict key."""
    if k in TORCH_KEYS:
        return TORCH_KEYS[k]
    mod, _, leaf = k.partition(".")
    return f"{mod}.{ {'w': 'weight', 'b': 'bias'}.get(leaf, leaf) }"


def torch_shape(k: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(reversed(shape)) if k == "m.w" else shape  # Linear keeps [out, in]


class PruneNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.s1 = nn.ReLU()
        self.c2 = nn.Conv2d(8, 6, 1)
        self.s2 = nn.ReLU6()
        self.c3, self.c4, self.c6 = nn.Conv2d(6, 4, 1), nn.Conv2d(6, 4, 1), nn.Conv2d(6, 4, 1)
        self.s3, self.s4, self.s5 = nn.ReLU(), nn.ReLU(), nn.ReLU()
        self.g1 = nn.Linear(8, 6)
        self.s7 = nn.Tanh()
        self.g2 = nn.Linear(6, 3)
        self.m = nn.Linear(4, 5)
        self.s6 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y2 = self.s2(self.c2(self.s1(self.bn(self.c1(x)))))
        y3, y4, y5 = self.s3(self.c3(y2)), self.s4(self.c4(y2)), self.s5(self.c6(y2))
        a = torch.cat([y3, y4], 1).mean((2, 3))
        out_a = self.g2(self.s7(self.g1(a)))
        b = torch.flatten(nn.functional.adaptive_avg_pool2d(y4 + y5, 1), 1)
        return out_a, self.s6(self.m(b))


def build_torch(seed: int = 0) -> Any:
    """The same network as :func:`build_onnx`, as an eager module (sites named s1 … s7 alike)."""
    net = PruneNet().eval()
    w = weights(seed)
    sd = {torch_key(k): torch.from_numpy(v.T.copy() if k == "m.w" else v) for k, v in w.items()}
    sd["bn.num_batches_tracked"] = torch.tensor(0)
    net.load_state_dict(sd)
    return net
