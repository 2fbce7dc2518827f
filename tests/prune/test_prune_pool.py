"""One CNN with max pooling (with indices), a mean and a max over the spatial axes, in every format.

ONNX (``MaxPool``, ``ReduceMean``, ``ReduceMax``), TorchScript (``max_pool2d_with_indices``
seen op by op), ``.pt2`` (``getitem`` of the pool's tuple, ``mean.dim``, ``amax``) and the
eager module must prune to the same units and the same parameter count; with
``--only-proven`` on [0, 1] that is exactly the construction's dead units (:mod:`pool_models`).
A mean over tokens (``[N, T, F]``, units on the last axis) is followed the same way.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pool_models as pm
import pytest
import torch
from torch import nn

from actaudit.prune import prune


def _onnx(net: nn.Module, x: torch.Tensor, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (x,), str(path), input_names=["x"], dynamic_axes={"x": {0: "N"}}, dynamo=False)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("prune_pool")
    x = pm.calib()
    np.save(d / "x.npy", x)
    net = pm.build(with_indices=True)
    xt = torch.from_numpy(x[:4])
    _onnx(net, xt, d / "net.onnx")
    torch.jit.save(torch.jit.script(net), str(d / "net.ts"))
    torch.jit.save(torch.jit.trace(pm.build(), xt), str(d / "traced.ts"))
    ep = torch.export.export(net, (xt,), dynamic_shapes=({0: torch.export.Dim.AUTO},))
    torch.export.save(ep, str(d / "net.pt2"))
    return {
        "onnx": d / "net.onnx",
        "ts": d / "net.ts",
        "traced-ts": d / "traced.ts",
        "pt2": d / "net.pt2",
        "eager": net,
        "x": d / "x.npy",
    }


FORMATS = ("onnx", "ts", "traced-ts", "pt2", "eager")


def _cut(models: dict[str, Any], fmt: str, **kw: Any) -> tuple[list[list[int]], int, int]:
    r = prune(models[fmt], str(models["x"]), **kw)
    s = r.summary()
    return [list(site.removed) for site in r.sites], s["parameters_before"], s["parameters_after"]


def test_same_cut_in_every_format(models: dict[str, Any]) -> None:
    got = {fmt: _cut(models, fmt) for fmt in FORMATS}
    assert all(g == got["onnx"] for g in got.values()), got
    removed, before, after = got["onnx"]
    assert before == pm.PARAMS_BEFORE and after <= pm.PARAMS_AFTER
    for r, dead in zip(removed, pm.DEAD.values(), strict=True):
        assert set(dead) <= set(r)  # units dead by construction go; others may be dead on this data


@pytest.mark.parametrize("fmt", ["onnx", "ts", "pt2"])
def test_proven_cut_is_the_construction(models: dict[str, Any], fmt: str) -> None:
    removed, before, after = _cut(models, fmt, only_proven=True, input_range=("0,1",))
    assert removed == list(pm.DEAD.values())
    assert (before, after) == (pm.PARAMS_BEFORE, pm.PARAMS_AFTER)


class TokenNet(nn.Module):
    """[N, 6, 5] tokens → Linear 5→8 → ReLU (dead {0, 6}) → mean over tokens → Linear 8→3."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.s, self.b = nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.s(self.a(x)).mean(1))


def test_mean_over_tokens(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    net = TokenNet().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.from_numpy(rng.uniform(-0.25, 0.25, size=tuple(p.shape)).astype(np.float32)))
        net.a.bias[[0, 6]] = -100.0
    x = rng.uniform(0, 1, size=(32, 6, 5)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    xt = torch.from_numpy(x[:4])
    _onnx(net, xt, tmp_path / "t.onnx")
    ep = torch.export.export(net, (xt,), dynamic_shapes=({0: torch.export.Dim.AUTO},))
    torch.export.save(ep, str(tmp_path / "t.pt2"))
    want = (5 * 8 + 8 + 8 * 3 + 3) - (2 * 5 + 2 + 2 * 3)
    for path in (tmp_path / "t.onnx", tmp_path / "t.pt2"):
        r = prune(str(path), str(tmp_path / "x.npy"), only_proven=True, input_range=("0,1",))
        assert [list(s.removed) for s in r.sites] == [[0, 6]], path
        assert r.summary()["parameters_after"] == want
