"""Peak memory of an audit on models whose output (logits) is large, against plain inference.

    python bench/large_output.py            # ~1-2 min on 2 cores

A seeded token model: ``[B, T, 256] -> Linear(256, 512) -> ReLU -> Linear(512, V)``, the
logits ``[B, T, V]`` being the output: T tokens and V vocabulary grow the logits, V also
grows the weights (so the two effects can be told apart). Each measurement is
a fresh process (its peak resident set from ``wait4``): plain inference over the data
(the output of each batch dropped at once), and ``actaudit audit`` on the same file and
batch size, for TorchScript and ONNX. If the audit held outputs, its excess over plain
inference would grow with ``T``. Not a test: nothing asserts on the figures.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
D, H, SAMPLES, BATCH = 256, 512, 128, 32
SHAPES = ((64, 8000), (512, 8000), (64, 64000))  # (tokens, vocabulary)

PLAIN = """
import sys, numpy as np
fmt, model, npy, bs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
x = np.load(npy, mmap_mode="r")
if fmt == "ts":
    import torch
    m = torch.jit.load(model).eval()
    with torch.no_grad():
        for i in range(0, len(x), bs):
            m(torch.tensor(np.asarray(x[i:i+bs])))
else:
    import onnxruntime as ort
    s = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    n = s.get_inputs()[0].name
    for i in range(0, len(x), bs):
        s.run(None, {n: np.ascontiguousarray(x[i:i+bs])})
"""


def build(tokens: int, vocab: int, tmp: Path) -> tuple[Path, Path]:
    import torch
    from torch import nn

    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(D, H), nn.ReLU(), nn.Linear(H, vocab)).eval()
    ts = tmp / f"lm{tokens}_{vocab}.ts"
    torch.jit.save(torch.jit.script(m), str(ts))
    onnx_path = tmp / f"lm{tokens}_{vocab}.onnx"
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w1, b1 = m[0].weight.detach().numpy().T.copy(), m[0].bias.detach().numpy()
    w2, b2 = m[2].weight.detach().numpy().T.copy(), m[2].bias.detach().numpy()
    g = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w1"], ["m1"]),
            helper.make_node("Add", ["m1", "b1"], ["z1"]),
            helper.make_node("Relu", ["z1"], ["a1"], name="relu"),
            helper.make_node("MatMul", ["a1", "w2"], ["m2"]),
            helper.make_node("Add", ["m2", "b2"], ["logits"]),
        ],
        "lm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", tokens, D])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", tokens, vocab])],
        [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(onnx_path))
    return ts, onnx_path


def peak_mib(cmd: list[str]) -> float:
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(p.pid, 0)
    err = p.stderr.read().decode() if p.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{cmd[:4]} failed: {err[-300:]}")
    return usage.ru_maxrss / 1024


def main() -> int:
    py = sys.executable
    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for tokens, vocab in SHAPES:
            npy = tmp / f"x{tokens}.npy"
            if not npy.exists():
                np.save(npy, np.random.default_rng(0).standard_normal((SAMPLES, tokens, D), dtype=np.float32))
            ts, onnx_path = build(tokens, vocab, tmp)
            out_mib = BATCH * tokens * vocab * 4 / 2**20
            w_mib = H * vocab * 4 / 2**20
            for fmt, model in (("ts", ts), ("onnx", onnx_path)):
                plain = peak_mib([py, "-c", PLAIN, fmt, str(model), str(npy), str(BATCH)])
                audit = peak_mib(
                    [
                        py,
                        "-m",
                        "actaudit",
                        "audit",
                        str(model),
                        "--calib",
                        str(npy),
                        "--batch-size",
                        str(BATCH),
                        "-q",
                    ]
                )
                rows.append((tokens, vocab, out_mib, w_mib, fmt, plain, audit))
                print(
                    f"T={tokens} V={vocab} {fmt}: plain {plain:.0f} MiB, audit {audit:.0f} MiB",
                    file=sys.stderr,
                )
    print(f"{SAMPLES} samples, batch {BATCH}; peak resident set per process\n")
    print(
        "| tokens T | vocabulary V | logits per batch | head weights | format | plain inference | audit | audit − plain |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for tokens, vocab, out_mib, w_mib, fmt, plain, audit in rows:
        name = "TorchScript" if fmt == "ts" else "ONNX"
        print(
            f"| {tokens} | {vocab} | {out_mib:.0f} MiB | {w_mib:.0f} MiB | {name} | {plain:.0f} MiB | "
            f"{audit:.0f} MiB | {audit - plain:+.0f} MiB |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
