"""GPU benchmark in one go: audit vs plain inference on CUDA, device memory, and N GPUs under torchrun.

    python bench/gpu_bench.py --out bench/GPU_RESULTS.md           # on a machine with a CUDA GPU
    python bench/gpu_bench.py --device cpu --quick --out /tmp/g.md  # dry run of the same code on CPU

For each benchmark model (``bench/models.py``) in TorchScript, and in ONNX when
onnxruntime offers ``CUDAExecutionProvider``: plain inference and the audit run
alternately on the same batches (inputs copied host to device per batch in both), medians
of per-round ratios; peak device memory (``torch.cuda.max_memory_allocated``) of each.
With two or more GPUs, ``torchrun --nproc-per-node G`` audits the same data and its wall
time is set against one process. Every row that fails says why instead of stopping the
script. This is not a test: nothing asserts on timings.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _peak_reset(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def _peak(device: str) -> float | None:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return None


def _alternate(
    plain: Callable[[], float], audit: Callable[[], float], rounds: int
) -> tuple[float, float, float]:
    plain(), audit()  # warm-up: kernels, sessions, allocator
    p, a = [], []
    for _ in range(rounds):
        p.append(plain())
        a.append(audit())
    return (
        statistics.median(p),
        statistics.median(a),
        statistics.median(x / y for x, y in zip(a, p, strict=True)),
    )


def torch_row(name: str, ts: Path, x: np.ndarray, bs: int, device: str, rounds: int) -> dict[str, Any]:
    import torch

    import actaudit

    m = torch.jit.load(str(ts), map_location=device).eval()
    batches = [np.ascontiguousarray(x[i : i + bs]) for i in range(0, len(x), bs)]

    def plain() -> float:
        _sync(device)
        t = time.perf_counter()
        with torch.no_grad():
            for b in batches:
                m(torch.from_numpy(b).to(device))
        _sync(device)
        return time.perf_counter() - t

    def audit() -> float:
        _sync(device)
        r = actaudit.audit(str(ts), x, batch_size=bs, device=device)
        _sync(device)
        return float(r.run["timings_s"]["capture_s"])

    p, a, ratio = _alternate(plain, audit, rounds)
    _peak_reset(device)
    plain()
    mem_plain = _peak(device)
    _peak_reset(device)
    audit()
    mem_audit = _peak(device)
    return {"model": name, "format": "TorchScript", "plain_s": p, "audit_s": a, "ratio": ratio,
            "mem_plain_mib": mem_plain, "mem_audit_mib": mem_audit}  # fmt: skip


def onnx_row(name: str, path: Path, x: np.ndarray, bs: int, provider: str, rounds: int) -> dict[str, Any]:
    import onnxruntime as ort

    import actaudit

    sess = ort.InferenceSession(str(path), providers=list(dict.fromkeys([provider, "CPUExecutionProvider"])))
    inp = sess.get_inputs()[0].name
    batches = [np.ascontiguousarray(x[i : i + bs]) for i in range(0, len(x), bs)]

    def plain() -> float:
        t = time.perf_counter()
        for b in batches:
            sess.run(None, {inp: b})
        return time.perf_counter() - t

    def audit() -> float:
        r = actaudit.audit(str(path), x, batch_size=bs, provider=provider)
        return float(r.run["timings_s"]["capture_s"])

    p, a, ratio = _alternate(plain, audit, rounds)
    return {"model": name, "format": f"ONNX ({provider})", "plain_s": p, "audit_s": a, "ratio": ratio,
            "mem_plain_mib": None, "mem_audit_mib": None}  # fmt: skip


def torchrun_rows(ts: Path, npy: Path, bs: int, device: str, gpus: int) -> list[dict[str, Any]]:
    rows = []
    for procs in sorted({1, gpus}):
        cmd = [
            sys.executable,
            "-m",
            "actaudit",
            "audit",
            str(ts),
            "--calib",
            str(npy),
            "--batch-size",
            str(bs),
        ]
        cmd += ["--device", device, "--format", "json", "-q"]
        if procs > 1:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(procs),
                   *cmd[1:]]  # fmt: skip
            cmd[cmd.index("actaudit") - 1 : cmd.index("actaudit")] = ["-m"]
        t = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - t
        row: dict[str, Any] = {"processes": procs, "wall_s": wall, "rc": out.returncode}
        if out.returncode == 0:
            rep = json.loads(out.stdout)
            row["capture_s"] = rep["run"]["timings_s"]["capture_s"]
            row["dead"] = rep["summary"]["dead"]
        else:
            row["error"] = (out.stderr.strip().splitlines() or ["?"])[-1][:200]
        rows.append(row)
    return rows


def _fmt(x: Any, spec: str = ".3f") -> str:
    return "n/a" if x is None else format(x, spec)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "GPU_RESULTS.md")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="small data, 2 rounds")
    ap.add_argument("--models", default="resnet18,mlp,transformer")
    args = ap.parse_args()

    import torch

    from bench.models import SPECS
    from bench.run_bench import export_onnx

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device: run with --device cpu for a dry run", file=sys.stderr)
        return 2
    samples, bs, rounds = (64, 16, 2) if args.quick else (1024, 64, 5)
    rows: list[dict[str, Any]] = []
    errors: list[str] = []
    dist_rows: list[dict[str, Any]] = []
    try:
        import onnxruntime as ort

        providers = ort.get_available_providers()
    except ImportError:
        providers = []
    onnx_provider = "CUDAExecutionProvider" if args.device.startswith("cuda") else "CPUExecutionProvider"
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        for name in args.models.split(","):
            spec = SPECS[name]
            m = spec.build()
            x = np.random.default_rng(0).standard_normal((samples, *spec.sample_shape), dtype=np.float32)
            ts = tmp / f"{name}.ts"
            torch.jit.save(torch.jit.script(m), str(ts))
            try:
                rows.append(torch_row(name, ts, x, bs, args.device, rounds))
            except Exception as e:
                errors.append(f"{name} TorchScript: {type(e).__name__}: {e}"[:300])
                traceback.print_exc()
            if onnx_provider in providers:
                try:
                    onnx_path = tmp / f"{name}.onnx"
                    export_onnx(m, torch.from_numpy(x[:2]), onnx_path)
                    rows.append(onnx_row(name, onnx_path, x, bs, onnx_provider, rounds))
                except Exception as e:
                    errors.append(f"{name} ONNX: {type(e).__name__}: {e}"[:300])
            else:
                errors.append(f"{name} ONNX: onnxruntime offers no {onnx_provider} (providers: {providers})")
            if name == "resnet18":
                gpus = torch.cuda.device_count() if args.device.startswith("cuda") else 2
                if gpus >= 2:
                    npy = tmp / "x.npy"
                    np.save(npy, x)
                    try:
                        dist_rows = torchrun_rows(
                            ts, npy, bs, "cuda" if args.device.startswith("cuda") else "cpu", gpus
                        )
                    except Exception as e:
                        errors.append(f"torchrun: {type(e).__name__}: {e}"[:300])
    dev = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else platform.processor() or "cpu"
    lines = [
        "# GPU benchmark (bench/gpu_bench.py)",
        "",
        f"Device: {dev} ({args.device}); torch {torch.__version__}; {samples} samples, batch {bs}, "
        f"{rounds} rounds; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        "| model | format | plain s | audit s | audit / plain | peak MiB plain | peak MiB audit |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['format']} | {_fmt(r['plain_s'])} | {_fmt(r['audit_s'])} | "
            f"{_fmt(r['ratio'], '.2f')}× | {_fmt(r['mem_plain_mib'], '.0f')} | {_fmt(r['mem_audit_mib'], '.0f')} |"
        )
    if dist_rows:
        lines += ["", "torchrun, ResNet-18-like, same data:", "", "| processes | wall s | capture s | dead | rc |",
                  "| --- | --- | --- | --- | --- |"]  # fmt: skip
        for r in dist_rows:
            lines.append(
                f"| {r['processes']} | {r['wall_s']:.2f} | {_fmt(r.get('capture_s'))} | {r.get('dead', '-')} | "
                f"{r['rc']} {r.get('error', '')} |"
            )
    if errors:
        lines += ["", "Rows not measured:", ""] + [f"- {e}" for e in errors]
    text = "\n".join(lines) + "\n"
    args.out.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main())
