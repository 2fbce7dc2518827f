"""A per-channel PReLU after a site with dead units: its weight must never lose step with the channels.

The prune IR reads ``prelu`` as an activation but never carries a cut through one (it is no
identity, pool or consumer layer), so the dead units that feed it are kept, with the reason,
and the PReLU keeps all its slopes; a dead unit elsewhere is still cut. Checked in eager,
TorchScript and ``.pt2``: the written model loads, has the expected shapes and computes the
same outputs as the original.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from actaudit.prune import prune


class PReLUNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1, self.r1, self.p = nn.Conv2d(2, 6, 3, padding=1), nn.ReLU(), nn.PReLU(6)
        self.c2, self.r2, self.fc = nn.Conv2d(6, 4, 3), nn.ReLU(), nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.r2(self.c2(self.p(self.r1(self.c1(x)))))
        return self.fc(y.mean((2, 3)))


def _net() -> PReLUNet:
    torch.manual_seed(0)
    m = PReLUNet().eval()
    with torch.no_grad():
        m.c1.bias[[1, 4]] = -50.0  # r1 units 1 and 4 dead: they feed the PReLU
        m.c2.bias[2] = -50.0  # r2 unit 2 dead: read by the mean and fc, cut
        m.p.weight.copy_(torch.linspace(0.1, 0.6, 6))
    return m


@pytest.mark.parametrize("fmt", ["eager", "ts", "pt2"])
def test_prelu_keeps_its_channels(tmp_path: Path, fmt: str) -> None:
    m = _net()
    x = np.random.default_rng(0).uniform(0, 1, (32, 2, 8, 8)).astype(np.float32)
    src: object = m
    if fmt == "ts":
        src = str(tmp_path / "m.ts")
        torch.jit.save(torch.jit.script(m), str(src))
    elif fmt == "pt2":
        src = str(tmp_path / "m.pt2")
        ep = torch.export.export(m, (torch.from_numpy(x[:4]),), dynamic_shapes=({0: torch.export.Dim.AUTO},))
        torch.export.save(ep, str(src))
    out = tmp_path / ("small.ts" if fmt == "ts" else "small.pt2")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = prune(src, x, output=str(out))
    xt = torch.from_numpy(x)
    with torch.no_grad():  # r2's dead units by torch itself: the pre-activation never above 0
        pre = m.c2(m.p(m.r1(m.c1(xt))))
    dead2 = [int(u) for u in torch.nonzero(pre.amax(dim=(0, 2, 3)) <= 0).flatten()]
    rows = {s.name: s for s in r.sites}
    assert 2 in dead2 and rows["r2"].removed == dead2
    assert rows["r1"].removed == [] and sorted(rows["r1"].kept) == [1, 4]
    assert all("prelu" in why for why in rows["r1"].kept.values())
    if fmt == "ts":
        small = torch.jit.load(str(out))
        state = dict(small.state_dict())
    else:
        loaded = torch.export.load(str(out))
        small, state = loaded.module(), dict(loaded.state_dict)
    shapes = {k.split(".")[-2] + "." + k.split(".")[-1]: tuple(v.shape) for k, v in state.items()}
    assert shapes["p.weight"] == (6,) and shapes["c1.weight"] == (6, 2, 3, 3)
    left = 4 - len(dead2)
    assert shapes["c2.weight"] == (left, 6, 3, 3) and shapes["fc.weight"] == (3, left)
    with torch.no_grad():
        np.testing.assert_allclose(small(xt).numpy(), m(xt).numpy(), rtol=1e-5, atol=1e-5)
