"""GELU's tanh form spelled out in ops (GPT-2's ``gelu_new``) is one GELU site on its input in every format.

Its ``tanh`` is no saturating unit of its own: the site's units are the GELU's input channels,
counted against the tanh form's flat tail. The oracle computes that tail here, by a numerical
derivative of the paper's formula in numpy, and counts the pre-activations by hand (eager
``Linear``) or with a forward pre-hook on the ``transformers`` module.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import actaudit
from tests.hf import tinymodels

FORMATS = ["eager", "torchscript", "torch.export", "onnx", "onnx-torchscript"]


def np_gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def flat_tail(fraction: float = 0.01) -> float:
    """Largest x on a fine grid below which the derivative stays under ``fraction`` of its maximum."""
    x = np.linspace(-12.0, 6.0, 1_800_001)
    d = np.gradient(np_gelu_tanh(x), x)
    live = np.abs(d) >= fraction * np.abs(d).max()
    return float(x[np.argmax(live) - 1])


class SpelledGelu(nn.Module):
    """An MLP whose activation is written out as GPT-2's formula, outside transformers."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.fc = nn.Linear(4, 8)
        self.out = nn.Linear(8, 3)
        with torch.no_grad():
            self.fc.bias[[1, 6]] = -40.0  # dead: far below the tail
            self.fc.bias[3] = 40.0  # fires on every input

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        y = 0.5 * h * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (h + 0.044715 * torch.pow(h, 3.0))))
        return torch.tanh(self.out(y))  # a real tanh after it stays a tanh site


def save_as(m: nn.Module, example: tuple[torch.Tensor, ...], fmt: str, folder: Path) -> Any:
    """The model in ``fmt``: itself, or the path of a file written by torch's own exporters."""
    if fmt == "eager":
        return m
    path = folder / {"torchscript": "m.ts", "torch.export": "m.pt2"}.get(fmt, f"{fmt}.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if fmt == "torchscript":
            torch.jit.save(torch.jit.trace(m, example, strict=False), str(path))
        elif fmt == "torch.export":
            torch.export.save(torch.export.export(m, example), str(path))
        else:
            dyn = {"dynamic_shapes": ({0: torch.export.Dim("n")},)} if fmt == "onnx" else {}
            dyn = dyn if fmt == "onnx" else {"dynamic_axes": {"x": {0: "n"}}, "input_names": ["x"]}
            torch.onnx.export(m, example, str(path), dynamo=fmt == "onnx", verbose=False, **dyn)
    return str(path)


@pytest.mark.parametrize("fmt", FORMATS)
def test_spelled_out_tanh_gelu_is_one_gelu_site(tmp_path: Path, fmt: str) -> None:
    m = SpelledGelu().eval()
    x = np.random.default_rng(3).standard_normal((64, 4)).astype(np.float32)
    model = save_as(m, (torch.from_numpy(x[:8]),), fmt, tmp_path)
    with torch.no_grad():
        h = m.fc(torch.from_numpy(x)).double().numpy()
    t = flat_tail()
    assert abs(t - (-3.0094)) < 1e-3  # the tanh form's tail, not the erf form's −3.0217
    fires = (h > t).sum(0)
    sites = actaudit.audit(model, x, per_unit=True).to_dict()["sites"]
    assert [(s["kind"], s["params"], s["units"]) for s in sites] == [
        ("gelu", {"tanh": 1.0}, 8),
        ("tanh", {}, 3),
    ]
    gelu = sites[0]
    assert gelu["op"].endswith("GELU")
    assert gelu["dead_units"] == [int(u) for u in np.flatnonzero(fires == 0)] == [1, 6]
    got = np.rint(np.array(gelu["per_unit"]["fire_rate"]) * len(x)).astype(int)
    assert got.tolist() == fires.tolist()
    assert got[3] == len(x)


class LogitsOf(nn.Module):
    """A transformers model as one tensor in, one tensor out (what the exporters take)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=ids, use_cache=False).logits


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, np.ndarray, list[np.ndarray]]:
    """A tiny GPT-2 trained briefly, its token batch, and per layer the fire counts a pre-hook on
    ``mlp.act`` sees (the oracle)."""
    folder = tmp_path_factory.mktemp("gpt2")
    model = tinymodels.gpt2(folder, steps=10).eval()
    tok = tinymodels.tokenizer(folder, "[BOS] $A")
    ids = np.array([tok.encode(p).ids[:6] for p in tinymodels.prompts(16, seed=9, lo=6, hi=9)], np.int64)
    t = flat_tail()
    counts: list[np.ndarray] = []
    hooks = [
        layer.mlp.act.register_forward_pre_hook(
            lambda mod, args: counts.append((args[0].double().numpy() > t).reshape(-1, 64).sum(0))
        )
        for layer in model.transformer.h
    ]
    with torch.no_grad():
        model(input_ids=torch.from_numpy(ids), use_cache=False)
    for hk in hooks:
        hk.remove()
    return LogitsOf(model).eval(), ids, counts


@pytest.mark.parametrize("fmt", ["eager", "torchscript", "torch.export", "onnx"])
def test_gpt2_gelu_is_one_site_per_layer_in_every_format(
    gpt2: tuple[nn.Module, np.ndarray, list[np.ndarray]], tmp_path: Path, fmt: str
) -> None:
    wrapped, ids, counts = gpt2
    model = save_as(wrapped, (torch.from_numpy(ids[:4]),), fmt, tmp_path)
    sites = actaudit.audit(model, ids, per_unit=True).to_dict()["sites"]
    names = [f"model.transformer.h.{i}.mlp.act/gelu" for i in range(tinymodels.LAYERS)]
    assert [(s["name"], s["kind"], s["params"]) for s in sites] == [(n, "gelu", {"tanh": 1.0}) for n in names]
    tokens = ids.size
    for site, want in zip(sites, counts, strict=True):
        assert site["coverage"]["elements_per_unit"] == tokens
        got = np.rint(np.array(site["per_unit"]["fire_rate"]) * tokens).astype(int)
        assert np.abs(got - want).sum() <= 2, (got.tolist(), want.tolist())  # float rounding across runtimes
        assert site["dead_units"] == [int(u) for u in np.flatnonzero(want == 0)]
    for layer, units in tinymodels.KILLED.items():
        assert set(units) <= set(sites[layer]["dead_units"])


@pytest.mark.parametrize(
    ("key", "kind", "params"),
    [
        ("gelu_new", "gelu", {"tanh": 1.0}),
        ("gelu_fast", "gelu", {"tanh": 1.0}),
        ("gelu_accurate", "gelu", {"tanh": 1.0}),
        ("gelu_python_tanh", "gelu", {"tanh": 1.0}),
        ("gelu_pytorch_tanh", "gelu", {"tanh": 1.0}),
        ("quick_gelu", "silu", {"beta": 1.702}),  # x·σ(1.702x): a SiLU of 1.702x, not a sigmoid site
        ("gelu", "gelu", {}),
    ],
)
def test_transformers_activations_that_compose_primitives(key: str, kind: str, params: dict) -> None:
    from transformers.activations import ACT2FN

    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 6), ACT2FN[key], nn.Linear(6, 2)).eval()
    x = np.random.default_rng(1).standard_normal((16, 4)).astype(np.float32)
    sites = actaudit.audit(m, x).to_dict()["sites"]
    assert [(s["kind"], s["params"], s["units"]) for s in sites] == [(kind, params, 6)]
