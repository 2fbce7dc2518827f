"""Do dead units come back after fine-tuning? Every mode of ``actaudit rewrite``, measured the way a user trains on.

Models die as they do in practice: a large learning rate early (Adam at 0.05–0.1 for 100
steps), then ordinary training. Data are seeded synthetic tasks built here (nothing is
downloaded): a tabular task whose teacher needs the capacity that dying takes away, the same
task with a model wide enough that its dead units cost little, the same task with a batch norm
between layer 1's Linear and ReLU (a site recycling refuses: ``--mode train`` gives it deploy
slopes), an 8×8 "digits" task (noisy
shifted class prototypes) for an MLP and, opt-in, for a small CNN (conv sites, a global average pool). For each task and seed the dead model is
rewritten by :func:`actaudit.rewrite.rewrite` itself (the product's surgery, in memory) in each
mode, then every arm — the original included — gets the same fine-tuning budget, the same
batches, with Adam and with SGD. Reported per task × optimiser and arm:

* drift at surgery: the rewrite's own relative L2 output drift on the calibration data;
* alive: the share of formerly dead units (never positive on the calibration data) that fire on
  at least 1 % of the test elements after fine-tuning;
* grad: at the first fine-tuning batch, the gradient norm reaching a formerly dead unit's
  weights (incoming row and outgoing column) over that of a live unit;
* Δacc: test accuracy after fine-tuning minus the original's after the same fine-tuning,
  paired by seed (mean ± std over seeds); diverged runs (NaN loss) are counted, not averaged.

Run: ``make bench-revival`` or ``.venv/bin/python bench/revival.py [--seeds 3] [--tasks a,b] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from actaudit.rewrite import rewrite

ARMS: dict[str, dict[str, Any] | None] = {
    "original": None,
    "deploy leaky": {"mode": "deploy", "to": "leaky"},
    "deploy prelu": {"mode": "deploy"},
    "learnable": {"mode": "learnable"},
    "recycle": {"mode": "recycle"},
    "recycle-leaky": {"mode": "recycle-leaky"},
    "train (default)": {"mode": "train"},
}
OPTIMISERS: dict[str, Callable[[Any], torch.optim.Optimizer]] = {
    "adam": lambda p: torch.optim.Adam(p, lr=1e-3),
    "sgd": lambda p: torch.optim.SGD(p, lr=SGD_LR, momentum=0.9),
}
SGD_LR = float(os.environ.get("REVIVAL_SGD_LR", "0.01"))
TRAIN_STEPS = 600
FINE_TUNE_STEPS = int(os.environ.get("REVIVAL_STEPS", "1000"))
BATCH = 128
CALIB = 512
ALIVE = 0.01  # fires on at least 1 % of the test elements


class MLP(nn.Module):
    def __init__(self, d: int, h1: int, h2: int, k: int, bn: bool = False) -> None:
        super().__init__()
        self.fc1, self.act1 = nn.Linear(d, h1), nn.ReLU()
        self.fc2, self.act2 = nn.Linear(h1, h2), nn.ReLU()
        self.bn1 = nn.BatchNorm1d(h1) if bn else None  # between fc1 and act1: not recyclable
        self.out = nn.Linear(h2, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.fc1(x)
        z = z if self.bn1 is None else self.bn1(z)
        return self.out(self.act2(self.fc2(self.act1(z))))


class CNN(nn.Module):
    """Two convolutions (the dead-prone sites), a global average pool, a linear head."""

    def __init__(self, c1: int, c2: int, k: int) -> None:
        super().__init__()
        self.fc1, self.act1 = nn.Conv2d(1, c1, 3, padding=1), nn.ReLU()
        self.fc2, self.act2 = nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU()
        self.pool, self.out = nn.AdaptiveAvgPool2d(1), nn.Linear(c2, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.flatten(self.pool(self.act2(self.fc2(self.act1(self.fc1(x))))), 1))


Split = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def tabular(seed: int, n: int = 6000, d: int = 20, k: int = 8) -> Split:
    """Labels of a random ReLU teacher (64 hidden units): a student that loses most of a layer loses accuracy."""
    g = torch.Generator().manual_seed(1000 + seed)
    x = torch.randn(n, d, generator=g)
    w1, w2 = torch.randn(d, 64, generator=g), torch.randn(64, k, generator=g)
    y = (torch.relu(x @ w1) @ w2).argmax(1)
    return x[:4000], y[:4000], x[4000:], y[4000:]


def digits(seed: int, n: int = 6000) -> Split:
    """8×8 images: ten smoothed random prototypes, shifted by up to two pixels, scaled, with noise."""
    g = torch.Generator().manual_seed(2000 + seed)
    protos = nn.functional.avg_pool2d((torch.rand(10, 1, 10, 10, generator=g) > 0.6).float(), 3, 1, 1)[:, 0]
    cls = torch.randint(0, 10, (n,), generator=g)
    dx, dy = torch.randint(0, 3, (n,), generator=g), torch.randint(0, 3, (n,), generator=g)
    imgs = torch.stack([protos[c, dy[i] : dy[i] + 8, dx[i] : dx[i] + 8] for i, c in enumerate(cls.tolist())])
    imgs = imgs * (0.7 + 0.6 * torch.rand(n, 1, 1, generator=g)) + 0.35 * torch.randn(n, 8, 8, generator=g)
    x = imgs.reshape(n, 64)
    return x[:4000], cls[:4000], x[4000:], cls[4000:]


def digit_images(seed: int) -> Split:
    xtr, ytr, xte, yte = digits(seed)
    return xtr.reshape(-1, 1, 8, 8), ytr, xte.reshape(-1, 1, 8, 8), yte


@dataclass(frozen=True)
class Task:
    name: str
    data: Callable[[int], Split]
    classes: int
    kill_lr: float  # Adam's learning rate for the first 100 steps: what kills the units
    width: int = 64
    conv: bool = False
    bn: bool = False  # a BatchNorm between fc1 and act1: recycling refuses that site

    def build(self, d: int) -> nn.Module:
        if self.conv:
            return CNN(8, self.width, self.classes)
        return MLP(d, self.width, self.width, self.classes, bn=self.bn)


TASKS = [
    Task("tabular", tabular, 8, 0.1),
    Task("digits", digits, 10, 0.05),
    # Wide enough that its dead units cost nothing: a revival must not hurt here.
    Task("tabular-wide", tabular, 8, 0.03, width=256),
    # Layer 1 behind a BatchNorm: recycling refuses it, --mode train gives it deploy slopes.
    Task("tabular-bn", tabular, 8, 0.1, bn=True),
]
# Opt-in (--tasks digits-cnn): conv sites behind a global average pool. Slow on CPU (~5 min for 3
# seeds) and a weak model (20-30 % test accuracy): its numbers are noisy.
EXTRA = [Task("digits-cnn", digit_images, 10, 0.05, width=16, conv=True)]


def train(
    m: nn.Module, x: torch.Tensor, y: torch.Tensor, opt: torch.optim.Optimizer, steps: int, seed: int
) -> bool:
    """``steps`` batches drawn with ``seed``; False when the loss went NaN."""
    g = torch.Generator().manual_seed(seed)
    loss_fn = nn.CrossEntropyLoss()
    m.train()
    for _ in range(steps):
        idx = torch.randint(0, x.shape[0], (BATCH,), generator=g)
        opt.zero_grad()
        loss = loss_fn(m(x[idx]), y[idx])
        if not torch.isfinite(loss):
            return False
        loss.backward()
        opt.step()
    m.eval()
    return True


def pre_activations(m: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The inputs of both activation sites (fc1's or bn1's and fc2's outputs) of a model, rewritten
    or not, as ``[elements, units]`` (a conv's channels are its units)."""
    got: list[torch.Tensor] = []
    first = "bn1" if isinstance(getattr(m, "bn1", None), nn.BatchNorm1d) else "fc1"
    hooks = [
        getattr(m, n).register_forward_hook(lambda _m, _i, o: got.append(o.detach())) for n in (first, "fc2")
    ]
    with torch.no_grad():
        m(x)
    for h in hooks:
        h.remove()
    return [z.movedim(1, -1).reshape(-1, z.shape[1]) for z in got]


def dead_units(m: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    return [(z > 0).sum(0) == 0 for z in pre_activations(m, x)]


def accuracy(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((m(x).argmax(1) == y).float().mean())


def grad_ratio(m: nn.Module, dead: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> float:
    """Gradient norm per formerly dead unit (incoming row + outgoing column) over that per live unit."""
    m.zero_grad()
    nn.CrossEntropyLoss()(m(x), y).backward()
    d_sum = d_n = l_sum = l_n = 0.0
    for (prod, cons), mask in zip((("fc1", "fc2"), ("fc2", "out")), dead, strict=True):
        p, c = getattr(m, prod), getattr(m, cons)
        units = p.weight.shape[0]
        per_unit = p.weight.grad.reshape(units, -1).pow(2).sum(1)
        per_unit = per_unit + c.weight.grad.transpose(0, 1).reshape(units, -1).pow(2).sum(1)
        if p.bias is not None and p.bias.grad is not None:
            per_unit = per_unit + p.bias.grad.pow(2)
        norms = per_unit.sqrt()
        if bool(mask.all()) or not bool(mask.any()):
            continue  # a layer without both kinds says nothing about the ratio
        d_sum, d_n = d_sum + float(norms[mask].sum()), d_n + int(mask.sum())
        l_sum, l_n = l_sum + float(norms[~mask].sum()), l_n + int((~mask).sum())
    m.zero_grad()
    if d_n == 0 or l_n == 0 or l_sum == 0:
        return math.nan  # no live unit to compare with (a layer died whole)
    return (d_sum / d_n) / (l_sum / l_n)


@dataclass
class Cell:
    """One task × optimiser × arm over the seeds."""

    drift: list[float] = field(default_factory=list)
    passed: int = 0
    alive: list[float] = field(default_factory=list)
    grad: list[float] = field(default_factory=list)
    delta: list[float] = field(default_factory=list)
    diverged: int = 0
    dead: list[int] = field(default_factory=list)


def surgery(
    model: nn.Module, calib: np.ndarray, seed: int, kw: dict[str, Any] | None
) -> tuple[nn.Module, float, bool]:
    """The rewrite's variant (in memory), its drift, and whether its gate passed (else it writes no file)."""
    if kw is None:
        return copy.deepcopy(model), 0.0, True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rep = rewrite(model, calib, seed=seed, **kw)
    drift = rep.final_drift.rel_l2 if rep.final_drift is not None else math.nan
    out = rep.model_out if rep.model_out is not None else copy.deepcopy(model)
    return out, drift, rep.passed


def run_seed(
    task: Task, seed: int, cells: dict[tuple[str, str, str], Cell], context: dict[str, list[float]]
) -> None:
    xtr, ytr, xte, yte = task.data(seed)
    torch.manual_seed(seed)
    model = task.build(xtr.shape[1])
    healthy = copy.deepcopy(model)
    train(model, xtr, ytr, torch.optim.Adam(model.parameters(), lr=task.kill_lr), 100, seed)
    train(model, xtr, ytr, torch.optim.Adam(model.parameters(), lr=1e-3), TRAIN_STEPS, seed + 1)
    train(healthy, xtr, ytr, torch.optim.Adam(healthy.parameters(), lr=1e-3), TRAIN_STEPS + 100, seed + 1)
    context.setdefault("dead acc", []).append(accuracy(model, xte, yte))
    context.setdefault("healthy acc", []).append(accuracy(healthy, xte, yte))
    calib = xtr[:CALIB].numpy()
    dead = dead_units(model, xtr[:CALIB])
    context.setdefault("dead layer 1 %", []).append(100 * float(dead[0].float().mean()))
    context.setdefault("dead layer 2 %", []).append(100 * float(dead[1].float().mean()))
    base: dict[str, float] = {}
    for arm, kw in ARMS.items():
        variant, drift, passed = surgery(model, calib, seed, kw)
        ratio = grad_ratio(copy.deepcopy(variant), dead, xtr[:CALIB], ytr[:CALIB])
        for opt_name, make in OPTIMISERS.items():
            m = copy.deepcopy(variant)
            ok = train(m, xtr, ytr, make(m.parameters()), FINE_TUNE_STEPS, seed + 2)
            cell = cells.setdefault((task.name, opt_name, arm), Cell())
            cell.drift.append(drift)
            cell.passed += int(passed)
            cell.grad.append(ratio)
            cell.dead.append(int(sum(int(d.sum()) for d in dead)))
            if not ok:
                cell.diverged += 1
                continue
            acc = accuracy(m, xte, yte)
            if arm == "original":
                base[opt_name] = acc
            fires = [(z > 0).float().mean(0) for z in pre_activations(m, xte)]
            back = sum(int(((f >= ALIVE) & d).sum()) for f, d in zip(fires, dead, strict=True))
            cell.alive.append(back / max(1, cell.dead[-1]))
            if opt_name in base:
                cell.delta.append(100 * (acc - base[opt_name]))
            if os.environ.get("REVIVAL_VERBOSE"):
                print(f"  {task.name} s{seed} {opt_name} {arm}: acc {acc:.4f}", file=sys.stderr)


def _ms(xs: list[float], spec: str = ".2f") -> str:
    xs = [x for x in xs if math.isfinite(x)]
    if not xs:
        return "-"
    if len(xs) == 1:
        return format(xs[0], spec)
    return f"{statistics.mean(xs):{spec}} ± {statistics.stdev(xs):{spec}}"


def table(cells: dict[tuple[str, str, str], Cell], contexts: dict[str, dict[str, list[float]]]) -> str:
    lines: list[str] = []
    for task in TASKS:
        ctx = contexts[task.name]
        lines.append(
            f"\n**{task.name}**: dead units {_ms(ctx['dead layer 1 %'], '.0f')} % / {_ms(ctx['dead layer 2 %'], '.0f')} % "
            f"(layer 1 / 2); test accuracy dead model {_ms([100 * a for a in ctx['dead acc']], '.1f')} %, "
            f"healthy model (same budget, no early large learning rate) {_ms([100 * a for a in ctx['healthy acc']], '.1f')} %\n"
        )
        lines.append(
            "| optimiser | arm | drift at surgery (gate passed) | formerly dead alive after FT | grad dead/live at step 0 | Δacc vs original (points) | diverged |"
        )
        lines.append("|---|---|---|---|---|---|---|")
        for opt_name in OPTIMISERS:
            for arm in ARMS:
                c = cells[(task.name, opt_name, arm)]
                lines.append(
                    f"| {opt_name} | {arm} | {max(c.drift):.2g} ({c.passed}/{len(c.drift)}) | {_ms([100 * a for a in c.alive], '.0f')} % | "
                    f"{_ms(c.grad, '.2g')} | {_ms(c.delta) if arm != 'original' else '0'} | {c.diverged} |"
                )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", type=Path, help="also write the table (markdown) here")
    ap.add_argument(
        "--tasks",
        default=",".join(t.name for t in TASKS),
        help=f"comma-separated task names (also: {', '.join(t.name for t in EXTRA)})",
    )
    args = ap.parse_args()
    TASKS[:] = [t for t in TASKS + EXTRA if t.name in args.tasks.split(",")]
    torch.set_num_threads(1)
    cells: dict[tuple[str, str, str], Cell] = {}
    contexts: dict[str, dict[str, list[float]]] = {}
    t0 = time.perf_counter()
    for task in TASKS:
        for seed in range(args.seeds):
            run_seed(task, seed, cells, contexts.setdefault(task.name, {}))
            print(f"{task.name} seed {seed} done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    text = (
        f"Revival benchmark: {args.seeds} seeds, fine-tuning {FINE_TUNE_STEPS} steps of batch {BATCH} "
        f"(Adam 1e-3; SGD {SGD_LR:g}, momentum 0.9), {CALIB} calibration samples; "
        f"{time.perf_counter() - t0:.0f} s on {torch.get_num_threads()} thread(s)\n" + table(cells, contexts)
    )
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
