"""One process against two: wall time of the same audit alone and under ``torchrun --nproc-per-node 2``.

    python bench/scaleout.py                 # ResNet-18-like, 256 images, TorchScript and ONNX
    python bench/scaleout.py --samples 64    # quicker

Runs, for each format: one process with the default threads, one process with
``OMP_NUM_THREADS=1``, and two torchrun ranks (torchrun sets one thread per rank), and
checks that the reports agree (everything but ``run``). Wall time is of the whole command
(start-up included); ``capture_s`` is rank 0's time from the loaded model to the combined
counters. Not a test: nothing asserts on the timings.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, dict]:
    t = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - t
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])} failed: {out.stderr[-400:]}")
    return wall, json.loads(out.stdout)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()
    import torch

    from bench.models import SPECS
    from bench.run_bench import export_onnx

    spec = SPECS["resnet18"]
    m = spec.build()
    py = sys.executable
    base_env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "OMP_NUM_THREADS")}
    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        x = np.random.default_rng(0).standard_normal((args.samples, *spec.sample_shape), dtype=np.float32)
        npy = tmp / "x.npy"
        np.save(npy, x)
        ts = tmp / "r.ts"
        torch.jit.save(torch.jit.script(m), str(ts))
        onnx_path = tmp / "r.onnx"
        export_onnx(m, torch.from_numpy(x[:2]), onnx_path)
        for name, model in (("TorchScript", ts), ("ONNX", onnx_path)):
            audit = ["-m", "actaudit", "audit", str(model), "--calib", str(npy)]
            audit += ["--batch-size", str(args.batch_size), "--format", "json", "-q"]
            one = ["--threads", "1"] if name == "ONNX" else []  # onnxruntime ignores OMP_NUM_THREADS
            runs = {
                "1 process, default threads": ([py, *audit], base_env),
                "1 process, 1 thread": ([py, *audit, *one], base_env | {"OMP_NUM_THREADS": "1"}),
                "2 processes (torchrun), 1 thread each": (
                    [
                        py,
                        "-m",
                        "torch.distributed.run",
                        "--standalone",
                        "--nproc-per-node",
                        "2",
                        *audit,
                        *one,
                    ],
                    base_env,
                ),
            }
            reports = {}
            for label, (cmd, env) in runs.items():
                wall, rep = run(cmd, env)
                reports[label] = rep
                rows.append(
                    (name, label, wall, rep["run"]["timings_s"]["capture_s"], rep["run"].get("processes", 1))
                )
                print(f"{name} / {label}: {wall:.1f} s", file=sys.stderr)
            ref = None
            for rep in reports.values():
                rep.pop("run")
                ref = ref or rep
                assert rep["sites"] == ref["sites"] and rep["summary"] == ref["summary"], "reports differ"
    load = os.getloadavg()
    print(f"ResNet-18-like, {args.samples} images 3×112×112, batch {args.batch_size}; {os.cpu_count()} CPUs, "
          f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}; reports identical (without `run`)\n")  # fmt: skip
    print("| format | run | wall s | capture s | processes |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]:.1f} | {r[3]:.1f} | {r[4]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
