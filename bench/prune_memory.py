"""Peak memory of ``actaudit prune`` on an ONNX model over 2 GB, against the model's size.

    python bench/prune_memory.py [DIR]

Builds the seeded 2.15 GB model of ``bench/large_onnx_write.py`` (weights in external
data, 1000 dead units), runs ``prune`` in a fresh process (peak resident set from
``wait4``, the whole process) and prints the peak as a multiple of the weights' size.
The same process samples its own resident set every 20 ms from ``/proc/self/statm``
(anonymous memory apart from file-backed pages such as mapped weights) together with
the stack of the main thread, and prints the peak of every stage of the prune: where
each GiB goes. The written file is checked by onnxruntime against the input. Not a
test: nothing asserts.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from large_onnx_write import build, peak_run, verify

# Runs in the measured process: the CLI in-process, a sampler thread beside it.
_PROFILED = r"""
import json, os, sys, threading, time
from actaudit.cli import main

PAGE = os.sysconf("SC_PAGE_SIZE")
main_id = threading.get_ident()
peaks = {}  # stage -> [first seen, peak total, anonymous at that peak, samples]
stop = False
STAGES = ("load_model", "pruner", "measure_original", "prepare", "graph", "_candidates", "_tiers", "variant",
          "apply", "outputs", "_fresh_drift", "release_values", "_report", "_write", "stage",
          "reload", "write_verified", "count_params")

def stage():
    f = sys._current_frames().get(main_id)
    names = []
    while f is not None:
        code = f.f_code
        if "actaudit" in code.co_filename and code.co_name in STAGES:
            names.append(code.co_name)
        f = f.f_back
    names.reverse()
    return " > ".join(dict.fromkeys(names)) or "startup/CLI"

def sample():
    while not stop:
        with open("/proc/self/statm") as fh:
            parts = fh.read().split()
        total, shared = int(parts[1]) * PAGE, int(parts[2]) * PAGE
        s = stage()
        p = peaks.setdefault(s, [time.perf_counter(), 0, 0, 0])
        p[3] += 1
        if total > p[1]:
            p[1], p[2] = total, total - shared
        time.sleep(0.02)

threading.Thread(target=sample, daemon=True).start()
code = 0
try:
    main(sys.argv[1:])
except SystemExit as e:
    code = e.code or 0
stop = True
with open(os.environ["PRUNE_MEMORY_PROFILE"], "w") as fh:
    json.dump({k: v for k, v in sorted(peaks.items(), key=lambda kv: kv[1][0])}, fh)
sys.exit(code)
"""


def main() -> None:
    d = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="actaudit-big-"))
    d.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    src = d / "big.onnx"
    if not (src.is_file() and (d / "big.onnx.weights").is_file() and (d / "x.npy").is_file()):
        src = build(d)  # seeded: a model left in DIR by an earlier run is the same one
    size = (d / "big.onnx.weights").stat().st_size / 2**30
    print(f"built {src} + weights ({size:.2f} GiB) in {time.perf_counter() - t:.0f} s")
    out = d / "prune" / "pruned.onnx"
    out.parent.mkdir(exist_ok=True)
    profile = d / "prune" / "profile.json"
    os.environ["PRUNE_MEMORY_PROFILE"] = str(profile)
    args = [sys.executable, "-c", _PROFILED, "prune", str(src), "-o", str(out), "--calib", str(d / "x.npy")]
    wall, rss, code, text = peak_run([*args, "--format", "json", "--force"])
    if code != 0:
        print(f"prune: exit {code}: {text.strip()[-400:]}")
        return
    s = json.loads(text)["summary"]
    drift = verify(src, out, np.load(d / "x.npy"))
    print(
        f"prune: {wall:.0f} s, peak RSS {rss:.2f} GiB = {rss / size:.2f} x the weights; "
        f"units removed {s['units_removed']}, parameters {s['parameters_before']:,} -> {s['parameters_after']:,}; "
        f"drift by onnxruntime {drift:.3g}"
    )
    print("peak resident set by stage (GiB; anonymous = not file-backed; sampled every 20 ms):")
    for name, (_, peak, anon, n) in json.loads(profile.read_text()).items():
        print(f"  {peak / 2**30:6.2f} (anon {anon / 2**30:5.2f})  {n:5d} samples  {name}")


if __name__ == "__main__":
    main()
