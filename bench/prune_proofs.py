"""Proven-dead unit counts per tier of evidence, interval and linear bounds on the same box.

    python bench/prune_proofs.py

Models: the prune fixtures of tests/prune (built in a temporary directory), the digits-like
pooling CNN, a seeded ReLU MLP (where linear relaxations matter), and rapidocr's PP-OCR
text-direction classifier (a package-shipped real model) on [-1, 1] with 64 seeded uniform
images. Prints one JSON line per model: the tiers' unit counts and the seconds each took.
For the eager models, ``data_dead_that_fire``: data-dead units that gradient ascent over the box
(Adam on 256 inputs, 300 steps, clamped) makes fire, which no sound proof can claim; so
``data - data_dead_that_fire`` is the most any proof could reach. Not a test: nothing asserts.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "prune")]


def counts(model: object, x: np.ndarray, box: str) -> dict[str, object]:
    from actaudit.prune import prune

    t = time.perf_counter()
    r = prune(model, x, input_range=(box,))
    s = r.summary()
    tiers = s["dead_units_by_evidence"]
    units = sum(site.units for site in r.sites)
    return {"box": box, "units": units, **tiers, "prune_s": round(time.perf_counter() - t, 2)}


def ceiling(model: object, x: np.ndarray, box: tuple[float, float]) -> dict[str, int]:
    """Data-dead units of the model's ReLU modules that an attack inside the box makes fire."""
    import torch
    from torch import nn

    assert isinstance(model, nn.Module)
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    pres: dict[int, torch.Tensor] = {}
    hooks = [
        m.register_forward_pre_hook(lambda _m, a, i=i: pres.__setitem__(i, a[0])) for i, m in enumerate(relus)
    ]

    def unit_max(inp: torch.Tensor) -> list[torch.Tensor]:
        model(inp)
        return [p.amax(dim=tuple(d for d in range(p.ndim) if d != 1)) for _, p in sorted(pres.items())]

    with torch.no_grad():
        dead = [m <= 0 for m in unit_max(torch.from_numpy(x))]
    torch.manual_seed(0)
    lo, hi = box
    z = (torch.rand(256, *x.shape[1:]) * (hi - lo) + lo).requires_grad_(True)
    opt = torch.optim.Adam([z], lr=0.05 * (hi - lo))
    for _ in range(300):
        model(z)
        loss = -sum(p.amax(dim=0).sum() for p in pres.values())
        opt.zero_grad()
        loss.backward()  # type: ignore[union-attr]
        opt.step()
        with torch.no_grad():
            z.clamp_(lo, hi)
    with torch.no_grad():
        fired = sum(int(((m > 0) & d).sum()) for m, d in zip(unit_max(z), dead, strict=True))
    for h in hooks:
        h.remove()
    return {"data_dead_that_fire": fired}


def mlp(seed: int = 0) -> object:
    import torch
    from torch import nn

    torch.manual_seed(seed)
    m = nn.Sequential(
        nn.Linear(16, 64),
        nn.ReLU(),
        nn.Linear(64, 64),
        nn.ReLU(),
        nn.Linear(64, 64),
        nn.ReLU(),
        nn.Linear(64, 4),
    ).eval()
    with torch.no_grad():
        for layer in (m[2], m[4]):
            layer.bias.sub_(1.0)  # a trained net's habit: many units mostly off
    return m


def widths(m: object, box: tuple[float, float], d_in: int) -> dict[str, float]:
    """Mean width of the last hidden pre-activation's bounds, interval vs linear."""
    import torch

    from actaudit.backends.torch.prune import gm_graph
    from actaudit.prune.interval import propagate
    from actaudit.prune.linear import propagate_linear

    g, ins = gm_graph(torch.export.export(m, (torch.zeros(2, d_in),)).module())  # type: ignore[arg-type]
    last = [op.outputs[0] for op in g.ops if op.kind == "linear"][-2]
    out = {}
    for name, run in (("interval", propagate), ("linear", propagate_linear)):
        b = run(g, {ins[0]: box}, {ins[0]: (1, d_in)})[last]
        out[f"mean_width_{name}"] = round(float(np.mean(b.hi - b.lo)), 3)
    return out


def main() -> None:
    import pool_models
    import prune_models

    with tempfile.TemporaryDirectory() as d:
        p = Path(d)
        prune_models.build_onnx(p / "fixture.onnx")
        rows = {"prune fixture (onnx)": counts(str(p / "fixture.onnx"), prune_models.calib(), "0,1")}
        pool_x = pool_models.calib()
        rows["pooling CNN (eager)"] = {
            **counts(pool_models.build(), pool_x, "0,1"),
            **ceiling(pool_models.build(), pool_x, (0.0, 1.0)),
        }
        rng = np.random.default_rng(0)
        mlp_x = rng.uniform(-1, 1, (256, 16)).astype(np.float32)
        rows["ReLU MLP 16-64-64-64-4 (eager)"] = {
            **counts(mlp(), mlp_x, "-1,1"),
            **ceiling(mlp(), mlp_x, (-1.0, 1.0)),
            **widths(mlp(), (-1.0, 1.0), 16),
        }
        spec = importlib.util.find_spec("rapidocr_onnxruntime")
        if spec is not None and spec.origin is not None:
            cls = Path(spec.origin).parent / "models" / "ch_ppocr_mobile_v2.0_cls_infer.onnx"
            x = rng.uniform(-1, 1, (64, 3, 48, 192)).astype(np.float32)
            rows["PP-OCR cls (rapidocr, onnx)"] = counts(str(cls), x, "-1,1")
    for name, row in rows.items():
        print(json.dumps({"model": name, **row}))


if __name__ == "__main__":
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        main()
