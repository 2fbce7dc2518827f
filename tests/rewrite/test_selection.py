"""Cheapest-first selection of dead units on a model whose per-unit costs are known by construction.

Hidden unit ``u`` reads input feature ``u`` only: ``z_u = s_u·x_u − 20`` (always negative, so
dead) and feeds the single output with weight ``w_u``. Given slope ``a`` and the exact shift,
unit ``u`` changes the output by ``a·w_u·s_u·(x_u − mean x_u)``: its cost is ``|w_u·s_u|``,
while its energy (all that the statistics see) is ``s_u²``. Unit 0 has the smallest energy
but the largest cost: ordering by energy revives it and then nothing else fits.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from actaudit.rewrite import rewrite

S = np.array([0.5, 1.0, 2.0, 4.0])  # input scale per dead unit: energy ∝ s²
W = np.array([2.0, 0.45, 0.25, 0.1375])  # consumer weight: cost ∝ |w·s| = 1.0, 0.45, 0.5, 0.55
N = 512
MIN_SLOPE = 0.01


class Net(nn.Module):
    def __init__(self, live_weight: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(5, 5)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(5, 1, bias=False)
        with torch.no_grad():
            self.fc1.weight.zero_()
            self.fc1.bias.fill_(-20.0)
            for u in range(4):
                self.fc1.weight[u, u] = float(S[u])
            self.fc1.weight[4, 4] = 1.0
            self.fc1.bias[4] = 20.0  # the live unit: always positive
            self.fc2.weight.copy_(torch.tensor([[*W, live_weight]], dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def _drift(x: np.ndarray, units: list[int], y_norm: float, a: float = MIN_SLOPE) -> float:
    """The exact relative drift of the shifted leaky units, computed from the inputs with numpy."""
    delta = sum(a * W[u] * S[u] * (x[:, u] - x[:, u].mean()) for u in units)
    return float(np.linalg.norm(delta) / y_norm) if units else 0.0


def test_cheapest_first_revives_exactly_the_cheap_units(tmp_path: Path) -> None:
    x = np.random.default_rng(0).standard_normal((N, 5)).astype(np.float32)
    # the output norm that puts cost 1.0 at 95 % of the 1 % budget at slope 0.01
    y_target = MIN_SLOPE * 1.0 * np.sqrt(N) / 0.0095
    live = x[:, 4].astype(np.float64) + 20.0
    lw = float(y_target / np.linalg.norm(live))
    net = Net(lw).eval()
    with torch.no_grad():
        y = net(torch.from_numpy(x)).double().numpy()[:, 0]
    y_norm = float(np.linalg.norm(y))
    # the premises, measured on this data: unit 0 fits alone, with any other unit it does not,
    # and the three cheap ones fit together
    assert _drift(x, [0], y_norm) <= 0.01
    assert all(_drift(x, [0, u], y_norm) > 0.01 for u in (1, 2, 3))
    assert _drift(x, [1, 2, 3], y_norm) <= 0.0095
    ts = tmp_path / "net.ts"
    torch.jit.trace(net, torch.from_numpy(x[:8])).save(str(ts))
    np.save(tmp_path / "x.npy", x)
    rep = rewrite(str(ts), str(tmp_path / "x.npy"), max_drift=0.01)
    (site,) = [s for s in rep.sites if s.dead]
    assert site.dead == 4
    assert site.unit_slopes is not None
    assert set(site.unit_slopes) == {1, 2, 3}
    assert all(a >= MIN_SLOPE for a in site.unit_slopes.values())
    # the measured drift is the one numpy computes for the chosen slopes
    delta = sum(a * W[u] * S[u] * (x[:, u] - x[:, u].mean()) for u, a in site.unit_slopes.items())
    assert rep.drift is not None
    assert rep.drift.rel_l2 == pytest.approx(np.linalg.norm(delta) / y_norm, rel=2e-3)
    assert rep.drift.rel_l2 <= 0.01
