"""Whole-process cost of an ONNX audit against plain onnxruntime inference: per site and at start-up.

    python bench/onnx_sites.py sites    # a 1,000-layer MLP (64 features, 4,096 samples)
    python bench/onnx_sites.py startup  # a ~47 MB ResNet-like CNN, one sample: the fixed cost
    python bench/onnx_sites.py both --rounds 5

Each row runs two fresh processes per round, alternated (plain first, then audit), and
reports the median seconds of each and their ratio. *Plain* imports numpy and
onnxruntime, builds one session from the file and runs the same batches; *audit* is
``actaudit audit MODEL --calib X.npy --format json`` as a user runs it. The models are
generated with ``onnx.helper`` from seeded weights under a temporary folder (nothing is
written to the tree). Not a test: nothing asserts on the timings.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PLAIN = """
import sys, numpy as np, onnxruntime as ort
path, data, bs, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
x = np.load(data, mmap_mode="r")
so = ort.SessionOptions(); so.log_severity_level = 3
if threads:
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
name = s.get_inputs()[0].name
for i in range(0, len(x), bs):
    s.run(None, {name: np.ascontiguousarray(x[i : i + bs])})
"""


def mlp(path: Path, layers: int = 1000, width: int = 64) -> None:
    """``layers`` × (MatMul, Add, Relu), seeded weights scaled to keep activations finite."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits = [], []
    cur = "x"
    for i in range(layers):
        w = (rng.standard_normal((width, width)) * np.sqrt(2.0 / width)).astype(np.float32)
        b = (rng.standard_normal(width) * 0.05 - 0.02).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes += [
            helper.make_node("MatMul", [cur, f"w{i}"], [f"m{i}"], name=f"fc{i}/MatMul"),
            helper.make_node("Add", [f"m{i}", f"b{i}"], [f"z{i}"], name=f"fc{i}/Add"),
            helper.make_node("Relu", [f"z{i}"], [f"r{i}"], name=f"relu{i}"),
        ]
        cur = f"r{i}"
    g = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])],
        [helper.make_tensor_value_info(cur, TensorProto.FLOAT, ["N", width])],
        inits,
    )
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def resnet_like(path: Path) -> None:
    """Conv + BatchNorm-free residual stages (~12 M parameters, ~47 MB), ReLU after every conv."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits = [], []
    k = [0]

    def conv(x: str, cin: int, cout: int, stride: int, size: int = 3, relu: bool = True) -> str:
        i = k[0] = k[0] + 1
        w = (rng.standard_normal((cout, cin, size, size)) * np.sqrt(2.0 / (cin * size * size))).astype(
            np.float32
        )
        inits.append(numpy_helper.from_array(w, f"cw{i}"))
        inits.append(numpy_helper.from_array((rng.standard_normal(cout) * 0.05).astype(np.float32), f"cb{i}"))
        pad = size // 2
        nodes.append(
            helper.make_node(
                "Conv",
                [x, f"cw{i}", f"cb{i}"],
                [f"c{i}"],
                strides=[stride] * 2,
                pads=[pad] * 4,
                name=f"conv{i}",
            )
        )
        if not relu:
            return f"c{i}"
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}"))
        return f"r{i}"

    cur = conv("x", 3, 64, 2, 7)
    cin = 64
    for cout, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
        for block in range(2):
            s = stride if block == 0 else 1
            y = conv(conv(cur, cin, cout, s), cout, cout, 1, relu=False)
            short = cur if (s == 1 and cin == cout) else conv(cur, cin, cout, s, 1, relu=False)
            k[0] += 1
            nodes.append(helper.make_node("Add", [y, short], [f"a{k[0]}"], name=f"add{k[0]}"))
            nodes.append(helper.make_node("Relu", [f"a{k[0]}"], [f"ar{k[0]}"], name=f"relu_add{k[0]}"))
            cur, cin = f"ar{k[0]}", cout
    nodes.append(helper.make_node("GlobalAveragePool", [cur], ["gap"], name="gap"))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], name="flat"))
    inits.append(numpy_helper.from_array((rng.standard_normal((512, 1000)) * 0.04).astype(np.float32), "fcw"))
    nodes.append(helper.make_node("MatMul", ["flat", "fcw"], ["logits"], name="fc"))
    g = helper.make_graph(
        nodes,
        "resnet_like",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 112, 112])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1000])],
        inits,
    )
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def _time(cmd: list[str], env: dict[str, str] | None = None) -> float:
    t = time.perf_counter()
    # cwd: a folder without an actaudit package, so that ``-m`` imports the installed (or BASE) one.
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env, cwd=tempfile.gettempdir())
    return time.perf_counter() - t


def compare(
    label: str, model: Path, data: Path, batch: int, rounds: int, base: str | None, threads: int = 0
) -> None:
    """Plain and audit alternated; with ``base``, a third process runs the audit of that checkout."""
    n = len(np.load(data, mmap_mode="r"))
    plain = [sys.executable, "-c", PLAIN, str(model), str(data), str(batch), str(threads)]
    audit = [sys.executable, "-m", "actaudit", "audit", str(model), "--calib", str(data)]
    audit += ["--batch-size", str(batch), "--format", "json", "-q"] + (
        ["--threads", str(threads)] if threads else []
    )
    env = {**os.environ, "PYTHONPATH": base} if base else None
    _time(plain), _time(audit)  # warm the page cache
    tp, ta, tb = [], [], []
    for _ in range(rounds):
        tp.append(_time(plain))
        ta.append(_time(audit))
        if env is not None:
            tb.append(_time(audit, env))
    p, a = statistics.median(tp), statistics.median(ta)
    print(
        f"{label}: {n} samples, batch {batch}: plain {p:.3f} s, audit {a:.3f} s, ratio {a / p:.2f}x, "
        f"difference {a - p:+.3f} s (median of {rounds})",
        flush=True,
    )
    if tb:
        b = statistics.median(tb)
        print(f"    audit of {base}: {b:.3f} s, ratio {b / p:.2f}x, difference {b - p:+.3f} s", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("what", choices=["sites", "startup", "both"], nargs="?", default="both")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--layers", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: its default)")
    ap.add_argument(
        "--base", help="also time the audit of another checkout (PYTHONPATH=BASE), e.g. before a change"
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="actaudit-bench-") as tmp:
        d = Path(tmp)
        if args.what in ("sites", "both"):
            mlp(d / "mlp.onnx", args.layers)
            x = np.random.default_rng(1).standard_normal((4096, 64)).astype(np.float32)
            np.save(d / "mlp.npy", x)
            compare(
                f"{args.layers}-site MLP",
                d / "mlp.onnx",
                d / "mlp.npy",
                32,
                args.rounds,
                args.base,
                args.threads,
            )
        if args.what in ("startup", "both"):
            resnet_like(d / "cnn.onnx")
            # One sample: the process is then almost all start-up (imports, load, session build).
            x = np.random.default_rng(2).standard_normal((1, 3, 112, 112)).astype(np.float32)
            np.save(d / "cnn.npy", x)
            mb = (d / "cnn.onnx").stat().st_size / 1e6
            compare(
                f"start-up, ResNet-like {mb:.0f} MB, one sample",
                d / "cnn.onnx",
                d / "cnn.npy",
                32,
                args.rounds,
                args.base,
                args.threads,
            )


if __name__ == "__main__":
    main()
