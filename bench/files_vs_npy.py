"""Wall time of whole ``actaudit audit`` processes: calibration from files against the same data as .npy.

Two pairs, run interleaved (median of ``--repeat`` runs each), side by side in one run:

- the OPT-style test model as a Hugging Face folder, calibrated from a text file of prompts of
  one length, against the same token ids as ``input_ids.npy``;
- a small CNN (torch.export file) calibrated from a folder of PNG images, against the same
  pixels as a ``.npy``.

Also prints the per-layer FFN dead fraction of the OPT-style test model (as the tests build it).
Run from the repository root: ``python bench/files_vs_npy.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run(args: list[str]) -> tuple[float, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-m", "actaudit", "audit", *args], capture_output=True, text=True, env=env
    )
    wall = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"audit {' '.join(args)} failed: {r.stderr}")
    return wall, r.stdout


def text_pair(tmp: Path, n: int) -> tuple[list[str], list[str]]:
    from tokenizers import Tokenizer

    from tests.hf import tinymodels

    folder = tmp / "opt"
    tinymodels.opt(folder, steps=15)
    prompts = tinymodels.prompts(n, seed=11, lo=12, hi=13)  # one length: the .npy holds the same ids
    (tmp / "prompts.txt").write_text("\n".join(prompts) + "\n")
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    np.save(tmp / "input_ids.npy", np.array([tok.encode(p).ids for p in prompts], dtype=np.int64))
    common = ["--format", "json", "--per-unit"]
    return (
        [str(folder), "--calib", str(tmp / "prompts.txt"), *common],
        [str(folder), "--calib", str(tmp / "input_ids.npy"), *common],
    )


def image_pair(tmp: Path, n: int) -> tuple[list[str], list[str]]:
    import torch
    from PIL import Image

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3), torch.nn.ReLU(), torch.nn.Conv2d(16, 16, 3), torch.nn.ReLU()
    ).eval()
    ep = torch.export.export(net, (torch.zeros(2, 3, 32, 32),), dynamic_shapes=({0: torch.export.Dim("b")},))
    torch.export.save(ep, tmp / "cnn.pt2")
    pixels = np.random.default_rng(0).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    (tmp / "imgs").mkdir()
    for i, a in enumerate(pixels):
        Image.fromarray(a).save(tmp / "imgs" / f"{i:05d}.png")
    np.save(
        tmp / "imgs.npy",
        np.ascontiguousarray(pixels.transpose(0, 3, 1, 2)).astype(np.float32) / np.float32(255),
    )
    common = ["--format", "json", "--per-unit"]
    return (
        [str(tmp / "cnn.pt2"), "--calib", str(tmp / "imgs"), *common],
        [str(tmp / "cnn.pt2"), "--calib", str(tmp / "imgs.npy"), *common],
    )


def same_counts(a: str, b: str) -> bool:
    da, db = json.loads(a), json.loads(b)
    return all(
        x["per_unit"]["fire_rate"] == y["per_unit"]["fire_rate"]
        for x, y in zip(da["sites"], db["sites"], strict=True)
    )


def opt_dead_fractions(tmp: Path) -> list[tuple[int, float, int, int]]:
    from tests.hf import tinymodels

    folder = tmp / "opt-test"
    tinymodels.opt(folder, steps=15)
    (tmp / "p30.txt").write_text("\n".join(tinymodels.prompts(30, seed=7)) + "\n")
    _, out = run([str(folder), "--calib", str(tmp / "p30.txt"), "--format", "json"])
    ffn = json.loads(out)["ffn"]
    return [(d["layer"], d["dead_fraction"], d["dead"], d["neurons"]) for d in ffn["layers"]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--samples", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        print("OPT-style test model, FFN dead fraction per layer:")
        for layer, frac, dead, n in opt_dead_fractions(tmp):
            print(f"  layer {layer}: {dead}/{n} = {100 * frac:.1f}%")
        for label, (files, npy) in (
            ("HF folder + text file vs same ids as .npy", text_pair(tmp, a.samples)),
            ("CNN + PNG folder vs same pixels as .npy", image_pair(tmp, a.samples)),
        ):
            tf, tn, outs = [], [], []
            for _ in range(a.repeat):
                w, o1 = run(files)
                tf.append(w)
                w, o2 = run(npy)
                tn.append(w)
                outs.append(same_counts(o1, o2))
            mf, mn = statistics.median(tf), statistics.median(tn)
            print(
                f"{label}: {a.samples} samples, files {mf:.2f} s, .npy {mn:.2f} s, ratio {mf / mn:.2f}x "
                f"(median of {a.repeat}; same counts: {all(outs)})"
            )


if __name__ == "__main__":
    main()
