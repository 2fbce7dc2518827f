"""GELU written out in its erf form, ``0.5·x·(1 + erf(x/√2))``, is one GELU site on ``x`` in every format.

transformers' ``gelu_python`` (``GELUActivation(use_gelu_python=True)``), the original BERT code and
many research codebases spell GELU so. The oracle shares no code with the capture: the flat tail
comes from the derivative Φ(x) + x·φ(x) evaluated here with ``math.erf``, the pre-activations from
numpy (``x @ W.T + b``) or from a forward hook on the ``transformers`` layer that feeds the GELU.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

import actaudit
from actaudit.cli import cli
from tests.hf import tinymodels

FORMATS = ["eager", "script", "trace", "torch.export", "onnx"]


def flat_tail(fraction: float = 0.01) -> float:
    """Largest x on a fine grid below which GELU's derivative stays under ``fraction`` of its maximum."""
    x = np.linspace(-8.0, 4.0, 1_200_001)
    cdf = 0.5 * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))
    d = np.abs(cdf + x * np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi))
    live = d >= fraction * d.max()
    return float(x[np.argmax(live) - 1])


TAIL = flat_tail()


def gelu_erf(h: torch.Tensor) -> torch.Tensor:
    return 0.5 * h * (1.0 + torch.erf(h / math.sqrt(2.0)))


class ErfGelu(nn.Module):
    """An MLP whose activation is GELU's erf form in explicit ops, outside transformers."""

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
        y = 0.5 * h * (1.0 + torch.erf(h / math.sqrt(2.0)))
        return torch.tanh(self.out(y))  # a real tanh after it stays a tanh site


class Spelled(ErfGelu):
    """The same GELU in other orders of its multiplications (BERT's, a halving last, the gate first)."""

    def __init__(self, spelling: int) -> None:
        super().__init__()
        self.spelling = spelling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        if self.spelling == 0:
            y = h * 0.5 * (1.0 + torch.erf(h / math.sqrt(2.0)))
        elif self.spelling == 1:
            y = h * (1.0 + torch.erf(h * (1.0 / math.sqrt(2.0)))) / 2.0
        else:
            y = (torch.erf(h / math.sqrt(2.0)) + 1.0) * 0.5 * h
        return torch.tanh(self.out(y))


def save_as(m: nn.Module, example: torch.Tensor, fmt: str, folder: Path) -> Any:
    """The model in ``fmt``: itself, or the path of a file written by torch's own exporters."""
    if fmt == "eager":
        return m
    path = folder / {"script": "m.ts", "trace": "t.ts", "torch.export": "m.pt2"}.get(fmt, "m.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if fmt in ("script", "trace"):
            ts = torch.jit.script(m) if fmt == "script" else torch.jit.trace(m, (example,))
            torch.jit.save(ts, str(path))
        elif fmt == "torch.export":
            torch.export.save(torch.export.export(m, (example,)), str(path))
        else:
            dyn = ({0: torch.export.Dim("n")},)
            torch.onnx.export(m, (example,), str(path), dynamo=True, verbose=False, dynamic_shapes=dyn)
    return str(path)


def oracle_fires(m: ErfGelu, x: np.ndarray) -> np.ndarray:
    """Per unit, the inputs whose pre-activation ``x @ W.T + b`` lies above GELU's flat tail (numpy)."""
    w = m.fc.weight.detach().double().numpy()
    b = m.fc.bias.detach().double().numpy()
    h = x.astype(np.float64) @ w.T + b
    assert np.abs(h - TAIL).min() > 1e-4  # no pre-activation on the threshold: float rounding cannot flip one
    return (h > TAIL).sum(0)


def sites_of(model: Any, x: np.ndarray) -> list[dict[str, Any]]:
    return list(actaudit.audit(model, x, per_unit=True).to_dict()["sites"])


def fire_counts(site: dict[str, Any], n: int) -> list[int]:
    return np.rint(np.array(site["per_unit"]["fire_rate"]) * n).astype(int).tolist()


def test_the_flat_tail_is_the_erf_forms() -> None:
    assert abs(TAIL - (-3.0217)) < 1e-3  # not the tanh form's −3.0094


@pytest.mark.parametrize("fmt", FORMATS)
def test_erf_gelu_is_one_gelu_site_in_every_format(tmp_path: Path, fmt: str) -> None:
    m = ErfGelu().eval()
    x = np.random.default_rng(3).standard_normal((64, 4)).astype(np.float32)
    fires = oracle_fires(m, x)
    sites = sites_of(save_as(m, torch.from_numpy(x[:8]), fmt, tmp_path), x)
    assert [(s["name"], s["kind"], s["params"], s["units"]) for s in sites] == [
        ("gelu", "gelu", {}, 8),
        ("out.tanh", "tanh", {}, 3),
    ]
    gelu = sites[0]
    assert gelu["op"].endswith("GELU")
    assert gelu["coverage"]["elements_per_unit"] == len(x)
    assert fire_counts(gelu, len(x)) == fires.tolist()
    assert gelu["dead_units"] == [int(u) for u in np.flatnonzero(fires == 0)] == [1, 6]
    assert fires[3] == len(x)


@pytest.mark.parametrize("spelling", [0, 1, 2])
@pytest.mark.parametrize("fmt", ["eager", "torch.export"])
def test_any_order_of_the_product_is_the_same_site(tmp_path: Path, fmt: str, spelling: int) -> None:
    m = Spelled(spelling).eval()
    x = np.random.default_rng(4).standard_normal((32, 4)).astype(np.float32)
    sites = sites_of(save_as(m, torch.from_numpy(x[:8]), fmt, tmp_path), x)
    assert [(s["name"], s["kind"], s["params"]) for s in sites] == [
        ("gelu", "gelu", {}),
        ("out.tanh", "tanh", {}),
    ]
    assert fire_counts(sites[0], len(x)) == oracle_fires(m, x).tolist()


class Act(nn.Module):
    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return gelu_erf(h)


class NotGelu(nn.Module):
    """erf where it is no GELU: a Gaussian CDF, twice GELU (no halving), a bare erf, 0.3·x·(1 + erf(x/√2));
    then one real GELU."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(6)
        self.fc1 = nn.Linear(4, 5)
        self.fc2 = nn.Linear(4, 6)
        self.act = Act()
        self.out = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        cdf = 0.5 * (1.0 + torch.erf(h / math.sqrt(2.0)))
        twice = h * (1.0 + torch.erf(h / math.sqrt(2.0)))
        bare = torch.erf(h)
        scaled = h * 0.3 * (1.0 + torch.erf(h / math.sqrt(2.0)))  # not x·0.5: the values say so
        g = self.act(self.fc2(x))
        return torch.tanh(self.out(g)) + (cdf + twice + bare + scaled).sum(-1, keepdim=True)


@pytest.mark.parametrize("fmt", ["eager", "script", "trace", "torch.export"])
def test_an_erf_that_is_no_gelu_is_no_site(tmp_path: Path, fmt: str) -> None:
    m = NotGelu().eval()
    x = np.random.default_rng(5).standard_normal((24, 4)).astype(np.float32)
    sites = sites_of(save_as(m, torch.from_numpy(x[:8]), fmt, tmp_path), x)
    # The erfs before it do not take the GELU's place in a compiled graph's list either.
    assert [(s["name"], s["kind"], s["units"]) for s in sites] == [
        ("act/gelu", "gelu", 6),
        ("out.tanh", "tanh", 2),
    ]
    h = x.astype(np.float64) @ m.fc2.weight.detach().double().numpy().T + m.fc2.bias.detach().double().numpy()
    assert fire_counts(sites[0], len(x)) == (h > TAIL).sum(0).tolist()


class LoneErf(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.erf(self.fc(x) / math.sqrt(2.0))


def test_a_lone_erf_model_audits_to_no_site() -> None:
    x = np.random.default_rng(6).standard_normal((8, 3)).astype(np.float32)
    report = actaudit.audit(LoneErf().eval(), x).to_dict()
    assert report["sites"] == []


# -- a Hugging Face folder: BERT with hidden_act="gelu_python" ---------------------------------------
@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("bert-erf")
    tinymodels.bert(root / "bert", steps=10, hidden_act="gelu_python")
    (root / "prompts.txt").write_text("\n".join(tinymodels.prompts(20, seed=11)) + "\n")
    return root / "bert", root / "prompts.txt"


def hook_oracle(folder: Path, prompts: list[str]) -> tuple[list[np.ndarray], int, int]:
    """Per layer, per FFN neuron: tokens whose intermediate dense output lies above the flat tail;
    total tokens; elements within 1e-3 of the tail (the rounding a runtime may flip)."""
    from tokenizers import Tokenizer
    from transformers import BertForSequenceClassification

    model = BertForSequenceClassification.from_pretrained(folder, local_files_only=True).eval()
    act = model.bert.encoder.layer[0].intermediate.intermediate_act_fn
    assert type(act).__name__ == "GELUActivation" and act.act.__name__ == "_gelu_python"
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    counts = [np.zeros(tinymodels.FFN, np.int64) for _ in range(tinymodels.LAYERS)]
    near = [0]

    def hook(i: int) -> Any:
        def f(mod: nn.Module, args: Any, out: torch.Tensor) -> None:
            h = out.detach().double().numpy().reshape(-1, tinymodels.FFN)
            counts[i] += (h > TAIL).sum(0)
            near[0] += int((np.abs(h - TAIL) < 1e-3).sum())

        return f

    layers = model.bert.encoder.layer
    handles = [layer.intermediate.dense.register_forward_hook(hook(i)) for i, layer in enumerate(layers)]
    tokens = 0
    with torch.no_grad():
        for p in prompts:  # one prompt at a time: no padding token is counted
            ids = torch.tensor([tok.encode(p).ids])
            tokens += ids.shape[1]
            model(input_ids=ids)
    for hd in handles:
        hd.remove()
    return counts, tokens, near[0]


def test_bert_gelu_python_folder_has_a_gelu_site_per_layer(bert: tuple[Path, Path]) -> None:
    folder, prompts = bert
    lines = [ln for ln in prompts.read_text().splitlines() if ln.strip()]
    want, tokens, near = hook_oracle(folder, lines)
    r = CliRunner().invoke(
        cli,
        [
            "audit",
            str(folder),
            "--calib",
            str(prompts),
            "--batch-size",
            "4",
            "--format",
            "json",
            "--per-unit",
        ],
    )
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    sites = report["sites"]
    layers = [f"bert.encoder.layer.{i}.intermediate.intermediate_act_fn" for i in range(tinymodels.LAYERS)]
    assert [(s["name"], s["kind"], s["params"], s["units"]) for s in sites] == [
        *[(f"{m}/gelu", "gelu", {}, tinymodels.FFN) for m in layers],
        ("bert.pooler.activation", "tanh", {}, tinymodels.HIDDEN),
    ]
    gelus = sites[: tinymodels.LAYERS]
    assert [d["dead"] for d in report["ffn"]["layers"]] == [int((c == 0).sum()) for c in want]
    for layer, (site, counts) in enumerate(zip(gelus, want, strict=True)):
        assert site["coverage"]["elements_per_unit"] == tokens
        got = np.array(fire_counts(site, tokens))
        assert np.abs(got - counts).sum() <= near, (layer, got.tolist(), counts.tolist())
        assert site["dead_units"] == [int(u) for u in np.flatnonzero(counts == 0)]
        assert set(tinymodels.KILLED[layer]) <= set(site["dead_units"])


def test_a_run_of_scalings_by_one_over_root2_pins_no_tensor_of_the_run() -> None:
    """A residual stream scaled by √½ every layer: each scaled tensor keeps only the one it came from."""
    import weakref

    from actaudit.backends.torch.swish import ErfGelu

    track = ErfGelu()
    x = torch.randn(4, 8)
    first = weakref.ref(x)
    for _ in range(50):
        y = x * math.sqrt(0.5)
        track.track("mul", (x, math.sqrt(0.5)), y)
        x = y
    assert track.erf_of((x,)) is not None  # the last one is still an erf argument to follow
    assert first() is None  # the start of the run is gone
