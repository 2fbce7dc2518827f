"""Where the PyTorch in-graph capture's time goes, in process: plain, in-graph and dispatch side by side.

    python bench/ingraph_profile.py                      # deep (1,000 sites), TorchScript and .pt2
    python bench/ingraph_profile.py resnet18 --samples 256 --formats ts

For each format, alternated rounds of: plain inference over the samples, the audit's capture
with the statistics inside the graph, and the capture with ``ACTAUDIT_INGRAPH=0`` (the dispatch
capture on every batch): process CPU seconds and the ratio to plain. For TorchScript it then
times one batch of the instrumented graph with the accumulator work switched off, to split
the remaining cost into graph work (stacks, extra nodes, Python calls) and statistics. Not a
benchmark: use ``bench/versus.py`` for whole-process ratios.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402


def cpu(f: Callable[[], Any]) -> float:
    t = time.process_time()
    f()
    return time.process_time() - t


def save(name: str, fmt: str, tmp: Path) -> Path:
    import torch

    from bench.models import SPECS

    spec = SPECS[name]
    m = spec.build().eval()
    path = tmp / f"{name}.{fmt}"
    if fmt == "ts":
        torch.jit.save(torch.jit.script(m), str(path))
    else:
        example = (torch.randn(32, *spec.sample_shape),)
        ep = torch.export.export(m, example, dynamic_shapes=({0: torch.export.Dim("batch")},))
        torch.export.save(ep, str(path))
    return path


def rows(name: str, fmt: str, samples: int, rounds: int, tmp: Path) -> None:
    import torch

    from actaudit.backends.torch import backend as tb
    from actaudit.backends.torch import ingraph, ingraph_fx, kernel
    from actaudit.data import from_arrays
    from bench.models import SPECS

    x = np.random.default_rng(0).standard_normal((samples, *SPECS[name].sample_shape), dtype=np.float32)
    tm = tb.load(save(name, fmt, tmp))

    def plain() -> None:
        with torch.no_grad():
            for i in range(0, samples, 32):
                tm.module(torch.from_numpy(x[i : i + 32]))

    def audit(on: str) -> None:
        os.environ["ACTAUDIT_INGRAPH"] = on
        tb.capture(tm, from_arrays([x], 32, "bench"), samples=None, stuck_fraction=0.01, axis_overrides=[])

    built: list[Any] = []
    real = ingraph_fx.plan
    ingraph_fx.plan = lambda m, rec: built.append(real(m, rec)) or built[-1]  # type: ignore[assignment]
    for r in range(rounds):
        p, g = cpu(plain), cpu(lambda: audit("1"))
        choice, layout = ingraph.last_choice, len(ingraph.last_layout)
        d = cpu(lambda: audit("0"))
        print(
            f"{name} {fmt} round {r}: plain {p:.2f}s | in-graph {g:.2f}s ({g / p:.2f}×; {choice}, "
            f"{layout} stats ops) | dispatch {d:.2f}s ({d / p:.2f}×)"
        )
    ingraph_fx.plan = real
    graph = next((b for b in built if b is not None), None)
    if graph is None:
        return
    ingraph._targets.update(graph.targets)
    xb = torch.from_numpy(x[:32])
    add = kernel._Acc.add

    def one(stats: bool) -> float:
        kernel._Acc.add = add if stats else (lambda *a, **k: None)  # type: ignore[method-assign]
        try:
            return min(cpu(lambda: graph.run([xb], {}, 32)) for _ in range(20)) * 1e3
        finally:
            kernel._Acc.add = add  # type: ignore[method-assign]

    base = min(cpu(lambda: torch.no_grad()(tm.module)(xb)) for _ in range(20)) * 1e3
    print(
        f"{name} {fmt} ms per batch of 32 (best of 20): plain {base:.2f} | in-graph {one(True):.2f} | "
        f"in-graph, accumulator work off {one(False):.2f}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", default=["deep"])
    ap.add_argument("--formats", default="ts,pt2")
    ap.add_argument("--samples", type=int, default=2048)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="actaudit-ingraph-") as d:
        for name in args.models:
            for fmt in args.formats.split(","):
                rows(name, fmt, args.samples, args.rounds, Path(d))
    return 0


if __name__ == "__main__":
    sys.exit(main())
