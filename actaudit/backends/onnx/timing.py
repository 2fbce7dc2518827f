"""Audit time against plain onnxruntime inference on the same batches.

``python -m actaudit.backends.onnx.timing`` times a small generated CNN and, when the
packages are installed, the ONNX models shipped by ``silero-vad`` and
``rapidocr-onnxruntime``. Session building is timed apart from running: it is paid
once per audit, not per batch.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ...data import Batch
from ...verdicts import Settings, classify
from .backend import _Runner, bound_batches, load, plain_session


def measure(
    model: str | Path | onnx.ModelProto, batches: list[Batch], *, reps: int = 3, threads: int | None = None
) -> dict[str, Any]:
    """Best-of-``reps`` seconds for plain inference and for the audit's instrumented runs."""
    handle = load(model, threads=threads)
    feeds = [c for _, c in bound_batches(handle, batches, [])]
    plain = plain_session(handle)
    t0 = time.perf_counter()
    runner = _Runner(handle, Settings().stuck_fraction, [])
    runner.session(False)
    build = time.perf_counter() - t0

    def samples(f: dict[str, np.ndarray]) -> int:
        return next((int(v.shape[0]) for v in f.values() if v.ndim), 1)

    for f in feeds:  # warm-up: first runs allocate
        plain.run(None, f)
        runner.run(f, samples(f))
    t_plain, t_audit = [], []
    for _ in range(reps):
        t = time.perf_counter()
        for f in feeds:
            plain.run(None, f)
        t_plain.append(time.perf_counter() - t)
        t = time.perf_counter()
        for f in feeds:
            runner.run(f, samples(f))
        t_audit.append(time.perf_counter() - t)
    verdicts = [
        classify(lv.info, lv.stats, Settings())
        for lv in runner.live
        if lv.info is not None and lv.stats is not None
    ]
    return {
        "sites": len(verdicts),
        "units": sum(v.units for v in verdicts),
        "dead": sum(len(v.dead_units) for v in verdicts),
        "saturated": sum(len(v.saturated_units) for v in verdicts),
        "not_run": sum(1 for lv in runner.live if lv.info is None) + len(runner.uncovered),
        "plain_s": min(t_plain),
        "audit_s": min(t_audit),
        "build_s": build,
        "ratio": min(t_audit) / min(t_plain),
    }


def small_cnn(channels: int = 32, seed: int = 0) -> onnx.ModelProto:
    """Conv-BN-ReLU stages with residual blocks (random weights), batch dimension symbolic."""
    rng = np.random.default_rng(seed)
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    n = 0

    def conv(x: str, cin: int, cout: int, stride: int, relu: bool) -> str:
        nonlocal n
        n += 1
        w = (rng.standard_normal((cout, cin, 3, 3)) * (2 / (9 * cin)) ** 0.5).astype(np.float32)
        inits.extend(
            [
                numpy_helper.from_array(w, f"w{n}"),
                numpy_helper.from_array(np.zeros(cout, np.float32), f"b{n}"),
            ]
        )
        nodes.append(
            helper.make_node(
                "Conv", [x, f"w{n}", f"b{n}"], [f"c{n}"], pads=[1, 1, 1, 1], strides=[stride, stride]
            )
        )
        if not relu:
            return f"c{n}"
        nodes.append(helper.make_node("Relu", [f"c{n}"], [f"r{n}"], name=f"relu{n}"))
        return f"r{n}"

    x, cin = "x", 3
    for stage, cout in enumerate((channels, channels * 2, channels * 4)):
        x = conv(x, cin, cout, 2, True)
        h = conv(x, cout, cout, 1, True)
        h = conv(h, cout, cout, 1, False)
        nodes.append(helper.make_node("Add", [h, x], [f"res{stage}"]))
        nodes.append(helper.make_node("Relu", [f"res{stage}"], [f"out{stage}"], name=f"block{stage}.relu"))
        x, cin = f"out{stage}", cout
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["y"]))
    graph = helper.make_graph(
        nodes,
        "small_cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, None, None])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", cin, 1, 1])],
        initializer=inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    return Path(spec.origin).parent if spec is not None and spec.origin else None


def cases(seed: int = 0) -> list[tuple[str, Any, list[Batch]]]:
    rng = np.random.default_rng(seed)
    out: list[tuple[str, Any, list[Batch]]] = []
    imgs = rng.standard_normal((128, 3, 112, 112)).astype(np.float32)
    out.append(
        (
            "small CNN 128×3×112×112, batch 32",
            small_cnn(),
            [([imgs[i : i + 32]], {}) for i in range(0, 128, 32)],
        )
    )
    sv = _package_dir("silero_vad")
    if sv is not None:
        audio = (rng.standard_normal((256, 512)) * 0.1).astype(np.float32)
        b: list[Batch] = [
            (
                [],
                {
                    "input": audio[i : i + 64],
                    "state": np.zeros((2, 64, 128), np.float32),
                    "sr": np.array(16000),
                },
            )
            for i in range(0, 256, 64)
        ]
        out.append(("silero_vad.onnx 256×512, batch 64", sv / "data" / "silero_vad.onnx", b))
        frames = (rng.standard_normal((256, 576)) * 0.1).astype(np.float32)
        h0 = np.zeros((1, 1, 128), np.float32)
        b = [([], {"input": frames[i : i + 64], "h": h0, "c": h0}) for i in range(0, 256, 64)]
        out.append(
            (
                "silero_vad_16k_sequence.onnx 256×576, batch 64",
                sv / "data" / "silero_vad_16k_sequence.onnx",
                b,
            )
        )
    ro = _package_dir("rapidocr_onnxruntime")
    if ro is not None:
        m = ro / "models"
        det = rng.random((16, 3, 160, 160)).astype(np.float32)
        out.append(
            (
                "PP-OCRv4 det 16×3×160×160, batch 8",
                m / "ch_PP-OCRv4_det_infer.onnx",
                [([det[i : i + 8]], {}) for i in (0, 8)],
            )
        )
        cls = rng.random((64, 3, 48, 192)).astype(np.float32)
        out.append(
            (
                "PP-OCR cls 64×3×48×192, batch 32",
                m / "ch_ppocr_mobile_v2.0_cls_infer.onnx",
                [([cls[i : i + 32]], {}) for i in (0, 32)],
            )
        )
        rec = rng.random((32, 3, 48, 320)).astype(np.float32)
        out.append(
            (
                "PP-OCRv4 rec 32×3×48×320, batch 16",
                m / "ch_PP-OCRv4_rec_infer.onnx",
                [([rec[i : i + 16]], {}) for i in (0, 16)],
            )
        )
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    print(
        "| model | sites | units | dead | saturated | not run | plain s | audit s | audit/plain | session build s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, model, batches in cases():
        r = measure(model, batches, reps=args.reps, threads=args.threads)
        print(
            f"| {name} | {r['sites']} | {r['units']} | {r['dead']} | {r['saturated']} | {r['not_run']} | "
            f"{r['plain_s']:.3f} | {r['audit_s']:.3f} | {r['ratio']:.2f}× | {r['build_s']:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
