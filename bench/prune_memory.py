"""Peak memory of ``actaudit prune`` on an ONNX model over 2 GB, against the model's size.

    python bench/prune_memory.py [DIR]

Builds the seeded 2.15 GB model of ``bench/large_onnx_write.py`` (weights in external
data, 1000 dead units), runs ``prune`` in a fresh process (peak resident set from
``wait4``) and prints the peak as a multiple of the weights' size. The written file is
checked by onnxruntime against the input. Not a test: nothing asserts.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from large_onnx_write import build, peak_run, verify


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
    args = [sys.executable, "-m", "actaudit", "prune", str(src), "-o", str(out), "--calib", str(d / "x.npy")]
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


if __name__ == "__main__":
    main()
