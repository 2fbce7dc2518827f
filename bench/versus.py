"""Two source trees side by side in one run: whole ``actaudit audit`` processes against plain inference.

    python bench/versus.py --before /path/to/other/checkout [--models resnet18,deep] [--pairs 3]

For each model and format, every round starts one plain-inference process and one audit
process per variant (the ``--before`` tree, this tree, and for TorchScript this tree with the
check-verdict cache off), in an order that rotates each round, after one warm-up round (page
cache, kernel build, verdict cache). Rows give the median over rounds of audit / plain (wall
and process CPU) for the whole calibration set and for start-up to the first batch (one
batch). The load average is printed with them: on a shared machine only these same-run
ratios compare. Nothing here asserts on timings.
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

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import run_bench, wholeproc  # noqa: E402


def _timed(cmd: list[str], tree: Path, env_extra: dict[str, str]) -> tuple[float, float]:
    env = dict(os.environ, PYTHONPATH=str(tree), **env_extra)
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tree, env=env)
    assert p.stderr is not None
    err = p.stderr.read()
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) not in (0, 1):
        raise RuntimeError(f"{' '.join(cmd)} in {tree}: {err.decode(errors='replace')[-400:]}")
    return wall, ru.ru_utime + ru.ru_stime


def compare(
    fmt: str,
    model: Path,
    npy: Path,
    batch: int,
    samples: int,
    pairs: int,
    variants: list[tuple[str, Path, dict]],
    flags: dict[str, list[str]] | None = None,
) -> dict[str, tuple[float, float]]:
    """Median (wall ratio, CPU ratio) to plain inference per variant."""
    plain = wholeproc.plain_cmd(fmt, model, npy, batch, samples)
    audit = wholeproc.audit_cmd(fmt, model, npy, batch, samples)
    runs: list[tuple[str, list[str], Path, dict]] = [("plain", plain, ROOT, {})]
    runs += [(label, audit + (flags or {}).get(label, []), tree, env) for label, tree, env in variants]
    ratios: dict[str, list[tuple[float, float]]] = {label: [] for label, _, _ in variants}
    for i in range(pairs + 1):
        shift = i % len(runs)
        got = {}
        for label, cmd, tree, env in runs[shift:] + runs[:shift]:
            got[label] = _timed(cmd, tree, env)
        if i:
            for label in ratios:
                ratios[label].append((got[label][0] / got["plain"][0], got[label][1] / got["plain"][1]))
    return {
        k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in ratios.items()
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--before", type=Path, required=True, help="the other checkout (its actaudit is imported)"
    )
    ap.add_argument("--models", default="resnet18,deep")
    ap.add_argument("--formats", default="ONNX,TorchScript")
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument(
        "--relu-from-output",
        action="store_true",
        help="ONNX: add a column for this tree's audit --relu-from-output",
    )
    args = ap.parse_args()
    cfg = run_bench.QUICK if args.quick else run_bench.FULL
    load0 = os.getloadavg()
    print(
        f"load average at start: {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}; {args.pairs} rounds + warm-up"
    )
    cols = ["before", "after", "after, cache off"] + (
        ["after, --relu-from-output"] if args.relu_from_output else []
    )
    print("| model | format | run | samples | " + " | ".join(cols) + " |")
    print("|---|---|---|---|" + "---|" * len(cols))
    with tempfile.TemporaryDirectory(prefix="actaudit-versus-") as d:
        tmp = Path(d)
        for name in args.models.split(","):
            p = run_bench.prepare(name, cfg, tmp)
            n = cfg.whole_samples[name]
            npy = tmp / f"{name}.npy"
            run_bench.write_npy(npy, n, tuple(int(s) for s in p.x.shape[1:]))
            for fmt in args.formats.split(","):
                model = p.onnx_path if fmt == "ONNX" else p.ts_path
                if model is None:
                    continue
                variants: list[tuple[str, Path, dict]] = [
                    ("before", args.before.resolve(), {}),
                    ("after", ROOT, {}),
                ]
                if fmt == "TorchScript":
                    variants.append(("after, cache off", ROOT, {"ACTAUDIT_TRUST_CACHE": "0"}))
                flags = {"after, --relu-from-output": ["--relu-from-output"]}
                if fmt == "ONNX" and args.relu_from_output:
                    variants.append(("after, --relu-from-output", ROOT, {}))
                for run, k in (("whole", n), ("start-up", cfg.batch)):
                    r = compare(fmt, model, npy, cfg.batch, k, args.pairs, variants, flags)
                    cells = [f"{r[v][0]:.2f}× (CPU {r[v][1]:.2f}×)" if v in r else "" for v in cols]
                    print(f"| {name} | {fmt} | {run} | {k} | " + " | ".join(cells) + " |", flush=True)
    load1 = os.getloadavg()
    print(f"load average at end: {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
