"""Reference models for the benchmark, written by hand (no torchvision).

* ``resnet18_like``: ResNet-18 layout (four stages of two BasicBlocks, 64→512 channels),
  batch norm, residual adds, and one ``self.relu`` reused twice per block, as in
  torchvision. 17 ReLU call sites on 3×112×112 inputs.
* ``mlp``: five Linear + ReLU layers on flat 1,024-feature inputs.
* ``deep``: 1,000 Linear(64, 64) + ReLU layers on 64 features: 1,000 sites of 64 units,
  where the fixed cost per site and per call, not the bytes, decides the audit time.
* ``transformer``: a pre-norm encoder (4 layers, d=256, 4 heads, ReLU feed-forward of
  1,024) on ``[batch, tokens, features]`` with 128 tokens.

Weights are seeded; nothing is trained. Activation statistics do not affect the timing.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)  # reused: two call sites per block
        self.down: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.down is None else self.down(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + idt)


class ResNet18Like(nn.Module):
    def __init__(self, classes: int = 100) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(3, 2, 1)
        layers = []
        cin = 64
        for i, c in enumerate((64, 128, 256, 512)):
            stride = 1 if i == 0 else 2
            layers.append(nn.Sequential(BasicBlock(cin, c, stride), BasicBlock(c, c, 1)))
            cin = c
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.fc = nn.Linear(512, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(x.mean((2, 3)), 1))


class MLP(nn.Module):
    def __init__(self, features: int = 1024, hidden: int = 2048, depth: int = 5, classes: int = 100) -> None:
        super().__init__()
        dims = [features] + [hidden] * depth
        self.layers = nn.ModuleList([nn.Linear(a, b) for a, b in itertools.pairwise(dims)])
        self.act = nn.ReLU()
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = self.act(layer(x))
        return self.head(x)


class DeepNarrow(nn.Module):
    """Many narrow layers; weights scaled so activations neither vanish nor blow up over 1,000 layers."""

    def __init__(self, features: int = 64, depth: int = 1000, classes: int = 10) -> None:
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(features, features) for _ in range(depth)])
        for layer in self.layers:
            nn.init.orthogonal_(layer.weight, gain=2**0.5)
            nn.init.normal_(layer.bias, 0.0, 0.05)
        self.head = nn.Linear(features, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = torch.relu(layer(x))
        return self.head(x)


class EncoderLayer(nn.Module):
    def __init__(self, d: int, heads: int, ff: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d)
        self.ff1 = nn.Linear(d, ff)
        self.ff2 = nn.Linear(ff, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = (
            self.qkv(self.norm1(x))
            .view(b, t, 3, self.heads, d // self.heads)
            .permute(2, 0, 3, 1, 4)
            .unbind(0)
        )
        a = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        x = x + self.proj(a.transpose(1, 2).reshape(b, t, d))
        return x + self.ff2(torch.relu(self.ff1(self.norm2(x))))


class Transformer(nn.Module):
    def __init__(
        self, d: int = 256, heads: int = 4, ff: int = 1024, layers: int = 4, classes: int = 100
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(d, heads, ff) for _ in range(layers))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.head(self.norm(x).mean(1))


@dataclass(frozen=True)
class Spec:
    """A benchmark model: how to build it and the shape of one sample."""

    name: str
    build: Callable[[], nn.Module]
    sample_shape: tuple[int, ...]
    description: str


def _seeded(cls: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        torch.manual_seed(0)
        m = cls()
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):  # non-trivial running stats, so BN is not an identity
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 1.5)
        return m.eval()

    return build


SPECS = {
    "resnet18": Spec(
        "resnet18", _seeded(ResNet18Like), (3, 112, 112), "ResNet-18-like CNN, 3×112×112, 17 ReLU sites"
    ),
    "mlp": Spec("mlp", _seeded(MLP), (1024,), "MLP 1024→5×2048→100, 5 ReLU sites"),
    "deep": Spec("deep", _seeded(DeepNarrow), (64,), "deep narrow MLP 1,000×(64→64), 1,000 ReLU sites"),
    "transformer": Spec(
        "transformer",
        _seeded(Transformer),
        (128, 256),
        "encoder 4×(d=256, ff=1024), 128 tokens, 4 ReLU sites",
    ),
}


# Zero-argument builders for ``actaudit audit weights.pt --arch bench/models.py:NAME``.
def resnet18() -> nn.Module:
    return SPECS["resnet18"].build()


def mlp() -> nn.Module:
    return SPECS["mlp"].build()


def deep() -> nn.Module:
    return SPECS["deep"].build()


def transformer() -> nn.Module:
    return SPECS["transformer"].build()
