"""TorchScript site names are the eager module paths where the archive lets them be recovered.

A traced program records a container's loop-unrolled calls without the container's own name
(``net.0.conformer.act`` for ``net.encoder_layers.0.conformer.act``). The expected names are read
from the eager model's module tree, not from the capture.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

import actaudit


class _Conformer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ff = nn.Linear(8, 8)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.ff(x))


class _Layer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conformer = _Conformer()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conformer(x)


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder_layers = nn.ModuleList([_Layer(), _Layer()])
        self.unused = nn.ModuleList([nn.Linear(2, 2)])  # never called: absent from the traced calls

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.encoder_layers:
            x = layer(x)
        return x


class _Top(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = _Net()
        self.head = nn.Sequential(nn.Linear(8, 4), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.net(x))


def test_traced_names_are_eager_paths(tmp_path: Path) -> None:
    torch.manual_seed(0)
    m = _Top().eval()
    x = np.random.RandomState(0).randn(8, 8).astype(np.float32)
    want = [n for n, mod in m.named_modules() if isinstance(mod, (nn.ReLU, nn.Tanh))]
    path = tmp_path / "top.ts"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(m, torch.from_numpy(x[:2]))
    hierarchy = [n.getModuleHierarchy() for n in traced.inlined_graph.nodes() if n.kind() == "aten::relu"]
    assert hierarchy[0].startswith("net(_Net).0(")  # the archive's own names skip the container
    traced.save(str(path))
    eager = actaudit.audit(m, x)
    script = actaudit.audit(str(path), x, trust_code=True)
    assert [v.info.name for v in eager.sites] == want
    assert [v.info.name for v in script.sites] == want
    for a, b in zip(eager.sites, script.sites, strict=True):
        np.testing.assert_allclose(a.fire_rate, b.fire_rate, atol=1e-6)
