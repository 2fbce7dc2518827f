"""A real ONNX model over protobuf's 2 GB limit through ``actaudit rewrite`` and ``prune``.

    python bench/large_onnx_write.py [DIR]     # ~2.2 GB model; measured: rewrite peaks at 21 GiB RSS, prune was OOM-killed on 23 GiB

A seeded ``x[N, 8192] -> Gemm(32768) -> Relu -> Gemm(8192) -> Relu -> Gemm(4)`` (2.15 GB
of float32 weights, saved with external data as such models are shipped), the first
1000 units of the first ReLU dead by a bias of -100. Each command runs in a fresh process (peak resident set from ``wait4``);
the published files are then checked independently: ``onnx.checker`` on the path, and
onnxruntime on the written file against the input. Not a test: nothing asserts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
D_IN, UNITS, DEAD, SAMPLES = 8192, 32768, 1000, 16


def build(d: Path) -> Path:
    """Two 1.07 GB weights: one tensor over 2 GB cannot even sit in a ModelProto (protobuf copies it)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def normal(*shape: int) -> np.ndarray:
        a = rng.standard_normal(shape, dtype=np.float32)
        a *= 1.0 / np.sqrt(shape[1])
        return a

    b1 = np.full(UNITS, 1.0, np.float32)
    b1[:DEAD] = -100.0
    weights = {
        "w1": normal(UNITS, D_IN),
        "b1": b1,
        "w2": normal(D_IN, UNITS),
        "b2": np.full(D_IN, 0.5, np.float32),
        "w3": normal(4, D_IN),
    }
    inits = [numpy_helper.from_array(v, k) for k, v in weights.items()]
    del weights
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["x", "w1", "b1"], ["z1"], name="fc1", transB=1),
            helper.make_node("Relu", ["z1"], ["a1"], name="act1"),
            helper.make_node("Gemm", ["a1", "w2", "b2"], ["z2"], name="fc2", transB=1),
            helper.make_node("Relu", ["z2"], ["a2"], name="act2"),
            helper.make_node("Gemm", ["a2", "w3"], ["y"], name="fc3", transB=1),
        ],
        "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", D_IN])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        inits,
    )
    del inits
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = d / "big.onnx"
    (d / "big.onnx.weights").unlink(missing_ok=True)  # onnx.save_model appends to an existing data file
    onnx.save_model(model, str(path), save_as_external_data=True, location="big.onnx.weights")
    np.save(d / "x.npy", rng.standard_normal((SAMPLES, D_IN), dtype=np.float32))
    return path


def peak_run(args: list[str]) -> tuple[float, float, int, str]:
    """Wall time, peak RSS (GiB), exit code and stdout (stderr on failure) of a fresh process."""
    t = time.perf_counter()
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = p.stdout.read() if p.stdout else b""
    err = p.stderr.read() if p.stderr else b""
    _, status, usage = os.wait4(p.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - t, usage.ru_maxrss / 2**20, code, (out if code == 0 else err).decode()


def verify(src: Path, out: Path, x: np.ndarray) -> float:
    import onnx
    import onnxruntime as ort

    onnx.checker.check_model(str(out), full_check=True)
    y = [ort.InferenceSession(str(p)).run(None, {"x": x})[0].astype(np.float64) for p in (out, src)]
    return float(np.linalg.norm(y[0] - y[1]) / np.linalg.norm(y[1]))


def main() -> None:
    d = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="actaudit-big-"))
    t = time.perf_counter()
    src = build(d)
    print(
        f"built {src} + weights ({(d / 'big.onnx.weights').stat().st_size / 2**30:.2f} GiB) in {time.perf_counter() - t:.0f} s"
    )
    x = np.load(d / "x.npy")
    exe = [sys.executable, "-m", "actaudit"]
    for cmd in ("rewrite", "prune"):
        outdir = d / cmd
        outdir.mkdir(exist_ok=True)
        out = outdir / f"{cmd}.onnx"
        args = [
            *exe,
            cmd,
            str(src),
            "-o",
            str(out),
            "--calib",
            str(d / "x.npy"),
            "--format",
            "json",
            "--force",
        ]
        wall, rss, code, text = peak_run(args)
        if code != 0:
            print(f"{cmd}: exit {code}: {text.strip()[-400:]}")
            continue
        rep = json.loads(text)
        drift = verify(src, out, x)
        files = {p.name: round(p.stat().st_size / 2**30, 3) for p in sorted(outdir.iterdir())}
        claimed = rep["summary"].get("drift_verified") or rep.get("drift_verified") or {}
        print(
            f"{cmd}: {wall:.0f} s, peak RSS {rss:.1f} GiB, files (GiB) {files}, "
            f"drift by onnxruntime {drift:.3g} (report: {claimed.get('relative_l2')}), "
            f"external_data {rep['output'].get('external_data', {}).get('path')}"
        )


if __name__ == "__main__":
    main()
