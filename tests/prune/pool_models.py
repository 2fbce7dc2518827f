"""A digits-like CNN with max pooling and shape-keeping reductions, dead units known by construction.

Input ``[N, 1, 8, 8]`` in [0, 1]; every weight has ``|w| <= 0.25``, so a bias of -100 kills
a unit for every input in the box (a 3×3 kernel over 8 channels sums to at most 18); fc1's
dead units get -1000 (interval bounds on its input reach ~280).

    x ─ c1 1→8 k3 pad1 ─ ReLU s1 (dead {2, 5}) ─ max_pool 2
      ─ c2 8→12 k3 pad1 ─ ReLU s2 (dead {1, 7})
      ─ cat(mean over (2, 3), amax over (2, 3)) ─ fc1 24→16 ─ ReLU s3 (dead {3, 9, 10}) ─ fc2 16→10
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

DEAD = {"s1": [2, 5], "s2": [1, 7], "s3": [3, 9, 10]}
PARAMS_BEFORE = (8 * 9 + 8) + (12 * 8 * 9 + 12) + (24 * 16 + 16) + (16 * 10 + 10)
# c1 keeps 6 channels, c2 reads 6 and keeps 10, fc1 reads 2 × 10 and keeps 13, fc2 reads 13
PARAMS_AFTER = (6 * 9 + 6) + (10 * 6 * 9 + 10) + (20 * 13 + 13) + (13 * 10 + 10)


class PoolNet(nn.Module):
    def __init__(self, with_indices: bool = False) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(8, 12, 3, padding=1)
        self.s1, self.s2, self.s3 = nn.ReLU(), nn.ReLU(), nn.ReLU()
        self.fc1, self.fc2 = nn.Linear(24, 16), nn.Linear(16, 10)
        self.with_indices = with_indices

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.s1(self.c1(x))
        if self.with_indices:
            y = nn.functional.max_pool2d(y, 2, return_indices=True)[0]
        else:
            y = nn.functional.max_pool2d(y, 2)
        y = self.s2(self.c2(y))
        z = torch.cat([y.mean((2, 3)), torch.amax(y, (2, 3))], 1)
        return self.fc2(self.s3(self.fc1(z)))


def build(seed: int = 0, with_indices: bool = False) -> PoolNet:
    rng = np.random.default_rng(seed)
    net = PoolNet(with_indices).eval()
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.copy_(torch.from_numpy(rng.uniform(-0.25, 0.25, size=tuple(p.shape)).astype(np.float32)))
            if name.endswith("bias"):
                p.copy_(torch.from_numpy(rng.uniform(0.1, 0.3, size=tuple(p.shape)).astype(np.float32)))
        for layer, site in ((net.c1, "s1"), (net.c2, "s2"), (net.fc1, "s3")):
            layer.bias[DEAD[site]] = -1000.0 if site == "s3" else -100.0
    return net


def calib(n: int = 48, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, size=(n, 1, 8, 8)).astype(np.float32)
