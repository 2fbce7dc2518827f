"""Where the ONNX audit's time goes: onnxruntime's per-op profile, plain vs instrumented.

    python bench/onnx_profile.py                    # resnet18, mlp, transformer
    python bench/onnx_profile.py resnet18 --top 12

Exports each reference model (``bench/models.py``) to ONNX, runs the same batches through
the plain session and the audit's fast instrumented session (same session options,
``--threads``), and prints kernel milliseconds per batch by op type. Not a benchmark:
profiling adds overhead; use ``bench/run_bench.py`` for ratios.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402


def profile(name: str, threads: int, batch: int, batches: int, top: int, tmp: Path) -> None:
    import onnx
    import onnxruntime as ort
    import torch

    from actaudit.backends.onnx import backend as ob
    from actaudit.backends.onnx import capture as oc
    from actaudit.backends.onnx import session as osess
    from bench.models import SPECS
    from bench.run_bench import export_onnx

    spec = SPECS[name]
    x = np.random.default_rng(0).standard_normal((batch * batches, *spec.sample_shape), dtype=np.float32)
    path = tmp / f"{name}.onnx"
    export_onnx(spec.build(), torch.from_numpy(x[:2]), path)
    handle = ob.load(path, threads=threads)
    made: dict[str, ort.InferenceSession] = {}

    def profiled(h: ob.OnnxModel, model: onnx.ModelProto) -> ort.InferenceSession:
        so = osess._options(h)
        so.enable_profiling = True
        so.profile_file_prefix = str(tmp / f"{name}_{len(made)}")
        return ort.InferenceSession(model.SerializeToString(), so, providers=osess._providers(h))

    made["plain"] = profiled(handle, handle.model)
    saved = oc.session_for
    oc.session_for = lambda h, m: made.setdefault("audit", profiled(h, m))  # type: ignore[assignment]
    try:
        runner = oc._Runner(handle, 0.01, [])
        sess, outs, _ = runner.session(False)
    finally:
        oc.session_for = saved
    names = [n for o in outs.values() for n in o.names.values()]
    inp = made["plain"].get_inputs()[0].name
    for _ in range(2):
        for i in range(0, len(x), batch):
            made["plain"].run(None, {inp: x[i : i + batch]})
            sess.run(names, {inp: x[i : i + batch]})
    runs = 2 * batches
    print(f"\n## {name} ({spec.description}), batch {batch}, {threads} threads: kernel ms per batch")
    for label, s in made.items():
        by_op: collections.Counter[str] = collections.Counter()
        for e in json.loads(Path(s.end_profiling()).read_text()):
            if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
                by_op[e["args"]["op_name"]] += e["dur"]
        total = sum(by_op.values()) / 1e3 / runs
        parts = ", ".join(f"{op} {d / 1e3 / runs:.1f}" for op, d in by_op.most_common(top))
        print(f"- {label}: {total:.1f} ms — {parts}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="*", default=["resnet18", "mlp", "transformer"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--top", type=int, default=10)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="actaudit-prof-") as d:
        for name in args.models:
            profile(name, args.threads, args.batch, args.batches, args.top, Path(d))


if __name__ == "__main__":
    main()
