"""``actaudit rewrite --mode deploy`` (the default before ``--mode train``) on the package-shipped real models and fixtures: the closing table of issue 11.

For each model: dead units, revived units, slope range, the drift the tool claims, the
drift re-measured here from the written file in its own runtime (onnxruntime,
``torch.jit.load``, ``torch.export.load``), passes and wall time. Run from the
repository root: ``.venv/bin/python bench/rewrite_revive.py`` (writes into a temp dir).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "rewrite"))
from test_rewrite_realmodels import LOADERS, _text_images  # noqa: E402  (the tests' seeded data)

ACTAUDIT = str(Path(sys.executable).parent / "actaudit")
FX = ROOT / "fixtures"


def _pkg(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.origin is not None, f"{name} is not installed (make install)"
    return Path(spec.origin).parent


def _rel(new: list[np.ndarray], old: list[np.ndarray]) -> float:
    num = sum(
        float(np.square(a.astype(np.float64) - b.astype(np.float64)).sum())
        for a, b in zip(new, old, strict=True)
    )
    return float(np.sqrt(num / sum(float(np.square(b.astype(np.float64)).sum()) for b in old)))


def _ort(feeds: list[dict[str, np.ndarray]]) -> Callable[[Path], list[np.ndarray]]:
    def run(p: Path) -> list[np.ndarray]:
        s = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
        return [o for f in feeds for o in s.run(None, f)]

    return run


def _jit(batches: list[Any]) -> Callable[[Path], list[np.ndarray]]:
    def run(p: Path) -> list[np.ndarray]:
        m = torch.jit.load(str(p)).eval()
        with torch.no_grad():
            return [(m(**b) if isinstance(b, dict) else m(b)).numpy() for b in batches]

    return run


def _pt2(batches: list[torch.Tensor]) -> Callable[[Path], list[np.ndarray]]:
    def run(p: Path) -> list[np.ndarray]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = torch.export.load(str(p)).module()
        with torch.no_grad():
            return [m(b).numpy() for b in batches]

    return run


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="actaudit-revive-"))
    (tmp / "loaders.py").write_text(LOADERS)
    ns: dict[str, Any] = {}
    exec(LOADERS, ns)
    x_ocr = _text_images()
    np.save(tmp / "ocr_text.npy", x_ocr)
    x_mlp = np.load(FX / "data/trained_inputs.npy")
    x_tok = np.load(FX / "data/tokens.npy")
    mlp_calib = ["--calib", str(FX / "data/trained_inputs.npy")]
    sv, ocr = _pkg("silero_vad") / "data", _pkg("rapidocr_onnxruntime") / "models"
    mlp_onnx_input = ort.InferenceSession(str(FX / "models/mlp_trained.onnx")).get_inputs()[0].name
    cases = [
        (
            "silero-vad .jit",
            sv / "silero_vad.jit",
            [f"--data-loader={tmp}/loaders.py:silero_jit"],
            _jit(list(ns["silero_jit"]())),
        ),
        (
            "silero-vad .onnx",
            sv / "silero_vad.onnx",
            [f"--data-loader={tmp}/loaders.py:silero_onnx"],
            _ort(list(ns["silero_onnx"]())),
        ),
        (
            "PP-OCRv4 det .onnx",
            ocr / "ch_PP-OCRv4_det_infer.onnx",
            [f"--calib={tmp}/ocr_text.npy"],
            _ort([{"x": x_ocr}]),
        ),
        ("mlp_trained .ts", FX / "models/mlp_trained.ts", mlp_calib, _jit([torch.from_numpy(x_mlp)])),
        ("mlp_trained .onnx", FX / "models/mlp_trained.onnx", mlp_calib, _ort([{mlp_onnx_input: x_mlp}])),
        ("mlp_trained .pt2", FX / "models/mlp_trained.pt2", mlp_calib, _pt2([torch.from_numpy(x_mlp)])),
        (
            "transformer_ffn .pt2 (dead at −1000)",
            FX / "models/transformer_ffn.pt2",
            ["--calib", str(FX / "data/tokens.npy")],
            _pt2([torch.from_numpy(x_tok[i : i + 32]) for i in range(0, len(x_tok), 32)]),
        ),
    ]
    print("| model | dead | revived | slopes | drift claimed | drift re-measured | passes | wall | exit |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, src, extra, run in cases:
        out = tmp / f"out{len(name)}{src.suffix}"
        cmd = [
            ACTAUDIT,
            "rewrite",
            str(src),
            "-o",
            str(out),
            "--force",
            "--format",
            "json",
            "--mode",
            "deploy",
            *extra,
        ]
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        wall = time.perf_counter() - t0
        rep = json.loads(r.stdout)
        s = rep["summary"]
        slopes = [a for x in rep["sites"] if x["unit_slopes"] for a in x["unit_slopes"].values()]
        measured = _rel(run(out), run(src)) if r.returncode == 0 else float("nan")
        claimed = (s["drift_verified"] or s["drift"] or {}).get("relative_l2")
        rng = f"{min(slopes):.4g}–{max(slopes):.4g}" if slopes else "-"
        print(
            f"| {name} | {s['dead_units']} | {s['revived_units']} | {rng} | {claimed:.6g} | {measured:.6g} | "
            f"{rep['search']['passes']} | {wall:.1f} s | {r.returncode} |"
        )


if __name__ == "__main__":
    main()
