"""Property tests for the aten side: random modules exported with ``torch.export``, every node's value
evaluated by torch itself (an ``fx.Interpreter`` over the program), checked against its bound.

Covers the translations of :mod:`actaudit.backends.torch.prune_ir` (conv, batch norm, linear,
activations with their parameters, pools with and without indices, means and extrema over
axes, residual add/mul, cat, flatten/view) that the ONNX property test cannot reach.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import random_nets as rn
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn import functional as F

from actaudit.backends.torch.prune import gm_graph
from actaudit.prune.interval import propagate
from actaudit.prune.linear import propagate_linear

ACTS: dict[str, Any] = {
    "relu": F.relu,
    "leaky": lambda x, r: F.leaky_relu(x, float(r.uniform(0, 0.5))),
    "elu": lambda x, r: F.elu(x, float(r.uniform(0.1, 2))),
    "selu": F.selu,
    "softplus": lambda x, r: F.softplus(x, float(r.uniform(0.5, 3))),
    "hardtanh": lambda x, r: F.hardtanh(x, -float(r.uniform(0, 2)), float(r.uniform(0, 2))),
    "relu6": F.relu6,
    "hardsigmoid": F.hardsigmoid,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "hardswish": F.hardswish,
    "hardswish_by_hand": lambda x: x * F.relu6(x + 3) / 6,
    "x_hardsigmoid_x": lambda x: x * F.hardsigmoid(x),
    "silu": F.silu,
    "gelu": lambda x, r: F.gelu(x, approximate=["none", "tanh"][int(r.integers(0, 2))]),
}
SPATIAL = (
    "conv",
    "bn",
    "act",
    "maxpool",
    "maxpool_idx",
    "avgpool",
    "reduce",
    "residual",
    "gate",
    "cat",
    "scale",
)
HEADS = ("flatten", "mean", "view", "adaptive")
DENSE = ("linear", "act")


class RandomNet(nn.Module):
    def __init__(self, spatial: list[str], head: str, dense: list[str], seed: int, channels: int) -> None:
        super().__init__()
        self.plan, self.head, self.dense = spatial, head, dense
        self.r = np.random.default_rng(seed)
        self.seed = seed
        self.mods = nn.ModuleList()
        self.channels = channels

    def build(self, x: torch.Tensor) -> None:
        """Create layers by running once on ``x`` (sizes follow the data)."""
        self.creating = True
        self.forward(x)
        self.creating = False
        self.eval()

    def _layer(self, i: int, make: Any, *args: Any, **kw: Any) -> Any:
        if self.creating:
            self.mods.append(make(*args, **kw))
        return self.mods[i]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = np.random.default_rng(self.seed)  # the same draws on every call
        i = 0
        for op in self.plan:
            c, h, w = x.shape[1:]
            m = min(h, w)
            if op == "conv":
                k, o = int(r.integers(1, min(3, m) + 1)), int(r.integers(1, 4))
                s, p = int(r.integers(1, 3)), int(r.integers(0, 2))
                conv = self._layer(i, nn.Conv2d, c, o, k, stride=s, padding=p)
                i += 1
                x = conv(x)
            elif op == "bn":
                stats = r.uniform(-2, 2, (4, c)).astype(np.float32)
                bn = self._layer(i, _bn, stats)
                i += 1
                x = bn(x)
            elif op == "act":
                x = _act(x, r)
            elif op in ("maxpool", "maxpool_idx", "avgpool"):
                k = int(r.integers(1, min(3, m) + 1))
                s, p = int(r.integers(1, 3)), int(r.integers(0, k // 2 + 1))
                if op == "maxpool":
                    x = F.max_pool2d(x, k, s, p)
                elif op == "maxpool_idx":
                    x = F.max_pool2d(x, k, s, p, return_indices=True)[0]
                else:
                    x = F.avg_pool2d(x, k, s, p, count_include_pad=bool(r.integers(0, 2)))
            elif op == "reduce":
                dims = [(2,), (3,), (2, 3)][int(r.integers(0, 3))]
                fn = [torch.mean, torch.amax, torch.amin, torch.sum][int(r.integers(0, 4))]
                x = fn(x, dims, keepdim=True)
            elif op in ("residual", "gate"):
                conv = self._layer(i, nn.Conv2d, c, c, 1)
                i += 1
                y = _act(conv(x), r)
                x = x + y if op == "residual" else x * y
            elif op == "cat":
                x = torch.cat([x, F.relu(x)], 1)
            elif op == "scale":
                x = x * float(r.uniform(-2, 2)) + float(r.uniform(-1, 1))
        if self.head == "flatten":
            x = torch.flatten(x, 1)
        elif self.head == "mean":
            x = x.mean((2, 3))
        elif self.head == "view":
            x = x.view(x.shape[0], -1)
        else:
            x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        for op in self.dense:
            if op == "linear":
                f, o = x.shape[1], int(r.integers(1, 6))
                lin = self._layer(i, nn.Linear, f, o)
                i += 1
                x = lin(x)
            else:
                x = _act(x, r)
        return x


def _act(x: torch.Tensor, r: np.random.Generator) -> torch.Tensor:
    name = list(ACTS)[int(r.integers(0, len(ACTS)))]
    fn = ACTS[name]
    return fn(x, r) if name in ("leaky", "elu", "softplus", "hardtanh", "gelu") else fn(x)


def _bn(stats: np.ndarray) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(stats.shape[1])
    with torch.no_grad():
        bn.weight.copy_(torch.from_numpy(stats[0]))
        bn.bias.copy_(torch.from_numpy(stats[1] / 2))
        bn.running_mean.copy_(torch.from_numpy(stats[2] / 2))
        bn.running_var.copy_(torch.from_numpy(np.abs(stats[3]) + 0.1))
    return bn


class _Values(torch.fx.Interpreter):
    def __init__(self, gm: torch.fx.GraphModule) -> None:
        super().__init__(gm)
        self.values: dict[str, torch.Tensor] = {}

    def run_node(self, n: torch.fx.Node) -> Any:
        out = super().run_node(n)
        if isinstance(out, torch.Tensor) and n.op == "call_function":
            self.values[n.name] = out
        return out


NETS = st.fixed_dictionaries(
    {
        "spatial": st.lists(st.sampled_from(SPATIAL), min_size=1, max_size=4),
        "head": st.sampled_from(HEADS),
        "dense": st.lists(st.sampled_from(DENSE), min_size=1, max_size=3),
        "seed": st.integers(0, 2**31 - 1),
        "channels": st.integers(1, 3),
    }
)
BOXES = st.tuples(st.floats(-4, 2), st.floats(0, 5)).map(lambda t: (t[0], t[0] + t[1]))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(net=NETS, box=BOXES)
def test_aten_interval_bounds_hold(net: dict[str, Any], box: tuple[float, float]) -> None:
    check_aten(net, box, propagate)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(net=NETS, box=BOXES)
def test_aten_linear_bounds_hold(net: dict[str, Any], box: tuple[float, float]) -> None:
    check_aten(net, box, propagate_linear)


def check_aten(net: dict[str, Any], box: tuple[float, float], bounds_of: Any) -> None:
    """Every value torch computes on sampled inputs lies inside its bound; the output's bound is finite."""
    torch.manual_seed(net["seed"] % 1000)
    shape = (net["channels"], 5, 5)
    m = RandomNet(**net)
    x = torch.from_numpy(rn.samples(box[0], box[1], shape, 32, net["seed"]))
    m.build(x[:2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm = torch.export.export(m, (x[:2],), dynamic_shapes=({0: torch.export.Dim.AUTO},)).module()
    graph, inputs = gm_graph(gm)
    env = bounds_of(graph, {inputs[0]: box}, {inputs[0]: (1, *shape)})
    run = _Values(gm)
    with torch.no_grad():
        run.run(x)
    checked = 0
    for name, y in run.values.items():
        b = env.get(name)
        if b is None or y.ndim == 0 or not y.is_floating_point() or y.shape[0] != x.shape[0]:
            continue
        v = y.numpy()
        lo, hi = b.lo.reshape(1, *v.shape[1:]), b.hi.reshape(1, *v.shape[1:])
        assert not (v < lo).any() and not (v > hi).any(), (
            f"{name}: worst {float(np.max(np.maximum(lo - v, v - hi)))}"
        )
        checked += np.isfinite(lo).all() and np.isfinite(hi).all()
    out = graph.outputs[0]
    assert np.isfinite(env[out].lo).all() and np.isfinite(env[out].hi).all(), [
        op.label for op in graph.ops if op.kind == "other"
    ]
    assert checked >= 2
