"""Hugging Face folders audited from a text file, counts held to an oracle of forward hooks.

The oracle shares no code with the capture: it loads the folder with ``transformers``' own
``from_pretrained``, tokenises each prompt with the ``tokenizers`` library, runs prompts one
at a time (no padding at all) and counts, per FFN neuron, the tokens whose pre-activation is
above the activation's flat tail, a threshold found here by autograd on the torch function.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner

from actaudit.cli import cli
from tests.hf import tinymodels


def tanh_gelu(x: torch.Tensor) -> torch.Tensor:
    """GPT-2's GELU, written here from the paper's formula (Hendrycks & Gimpel 2016)."""
    return 0.5 * x * (1.0 + torch.tanh((2.0 / torch.pi) ** 0.5 * (x + 0.044715 * x**3)))


FAMILIES = {  # builder, module holding the activation, its torch function
    "opt": (tinymodels.opt, "activation_fn", torch.relu),
    "bert": (tinymodels.bert, "intermediate.intermediate_act_fn", torch.nn.functional.gelu),
    "llama": (tinymodels.llama, "mlp.act_fn", torch.nn.functional.silu),
    "gpt2": (tinymodels.gpt2, "mlp.act", tanh_gelu),
}


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    out = {}
    for name, (build, _, _) in FAMILIES.items():
        build(root / name, steps=15)
        out[name] = root / name
    (root / "prompts.txt").write_text("\n".join(tinymodels.prompts(30, seed=7)) + "\n\n")
    out["prompts"] = root / "prompts.txt"
    return out


def tail_threshold(fn: Any, fraction: float = 0.01) -> float:
    """Largest t with |fn'(x)| < fraction · max|fn'| for every x ≤ t (0 for ReLU)."""
    if fn is torch.relu:
        return 0.0
    x = torch.linspace(-30.0, 10.0, 400001, dtype=torch.float64, requires_grad=True)
    (d,) = torch.autograd.grad(fn(x).sum(), x)
    flat = d.abs() < fraction * d.abs().max()
    first_live = int(torch.nonzero(~flat)[0])
    return float(x.detach()[first_live - 1])


@functools.cache
def oracle(
    folder: Path, prompts: tuple[str, ...], module_suffix: str, fn: Any
) -> tuple[list[torch.Tensor], int, int, list[int]]:
    """Per layer fire counts per neuron; total tokens; elements within 1e-3 of the threshold (a
    tolerance); per layer the (sequence, neuron) pairs where no token of the sequence fired."""
    import transformers
    from tokenizers import Tokenizer

    config = json.loads((folder / "config.json").read_text())
    cls = getattr(transformers, config["architectures"][0])
    model = cls.from_pretrained(folder, local_files_only=True).eval()
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    t = tail_threshold(fn)
    mods = [m for n, m in model.named_modules() if n.endswith(module_suffix)]
    counts = [torch.zeros(0) for _ in mods]
    near = [0]
    silent = [0 for _ in mods]

    def hook(i: int) -> Any:
        def f(mod: Any, args: Any) -> None:
            x = args[0].reshape(-1, args[0].shape[-1]).double()
            got = (x > t).sum(0)
            counts[i] = got if counts[i].numel() == 0 else counts[i] + got
            near[0] += int(((x - t).abs() < 1e-3).sum())
            silent[i] += int((got == 0).sum())  # one prompt per call: x holds its tokens only

        return f

    handles = [m.register_forward_pre_hook(hook(i)) for i, m in enumerate(mods)]
    tokens = 0
    with torch.no_grad():
        for p in prompts:
            ids = torch.tensor([tok.encode(p).ids])
            tokens += ids.shape[1]
            model(input_ids=ids)
    for h in handles:
        h.remove()
    return counts, tokens, near[0], silent


def audit_json(*args: str) -> dict[str, Any]:
    r = CliRunner().invoke(cli, ["audit", *args, "--format", "json", "--per-unit"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_folder_audit_from_text_matches_hook_oracle(folders: dict[str, Path], family: str) -> None:
    _, suffix, fn = FAMILIES[family]
    prompts = tuple(ln for ln in folders["prompts"].read_text().splitlines() if ln.strip())
    expect, tokens, near, _ = oracle(folders[family], prompts, suffix, fn)
    report = audit_json(str(folders[family]), "--calib", str(folders["prompts"]), "--batch-size", "4")
    sites = [s for s in report["sites"] if s["module"].endswith(suffix)]
    assert len(sites) == len(expect) == tinymodels.LAYERS
    if family == "gpt2":  # GELU's tanh form is one GELU site per layer, no tanh saturation site
        assert [(s["kind"], s["params"], s["units"]) for s in report["sites"]] == [
            ("gelu", {"tanh": 1.0}, tinymodels.FFN)
        ] * tinymodels.LAYERS
    assert report["calibration"]["samples"] == len(prompts)
    for layer, (site, want) in enumerate(zip(sites, expect, strict=True)):
        # Elements are tokens, and no padding: the tokens of the prompts, nothing more.
        assert site["coverage"]["elements_per_unit"] == tokens
        got = [round(r * tokens) for r in site["per_unit"]["fire_rate"]]
        diff = sum(abs(g - int(w)) for g, w in zip(got, want.tolist(), strict=True))
        assert diff <= near, (layer, got, want.tolist())
        dead = sorted(i for i, w in enumerate(want.tolist()) if w == 0)
        assert site["dead_units"] == dead
        assert set(tinymodels.KILLED[layer]) <= set(dead)


def test_sharded_folder_gives_the_same_counts(folders: dict[str, Path], tmp_path: Path) -> None:
    import transformers

    sharded = tmp_path / "opt-sharded"
    model = transformers.OPTForCausalLM.from_pretrained(folders["opt"], local_files_only=True)
    model.save_pretrained(sharded, max_shard_size="20KB")
    (sharded / "tokenizer.json").write_bytes((folders["opt"] / "tokenizer.json").read_bytes())
    assert (sharded / "model.safetensors.index.json").is_file()
    assert len(list(sharded.glob("model-*.safetensors"))) > 2
    one = audit_json(str(folders["opt"]), "--calib", str(folders["prompts"]))
    many = audit_json(str(sharded), "--calib", str(folders["prompts"]))
    for a, b in zip(one["sites"], many["sites"], strict=True):
        assert a["dead_units"] == b["dead_units"]
        assert a["per_unit"]["fire_rate"] == b["per_unit"]["fire_rate"]


def test_command_line_audit_of_a_folder(folders: dict[str, Path], tmp_path: Path) -> None:
    """The whole process, as a user runs it: the folder, a text file, tables on stdout, the HTML plot."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    html = tmp_path / "r.html"
    r = subprocess.run(
        [
            *(sys.executable, "-m", "actaudit", "audit", str(folders["opt"])),
            *("--calib", str(folders["prompts"]), "--html", str(html)),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "model.decoder.layers.0.activation_fn" in r.stdout
    assert "[transformers]" in r.stdout
    assert "FFN neurons per layer" in r.stdout
    page = html.read_text()
    assert 'id="ffn-chart"' in page and 'data-layers="2"' in page
    assert page.count('<circle class="ffn-dead"') == tinymodels.LAYERS


def hot_set_size(counts: list[int], share: float) -> int:
    """The fewest neurons whose fire counts reach ``share`` of the layer's firings, by a plain loop."""
    total, acc = sum(counts), 0
    for k, c in enumerate(sorted(counts, reverse=True), start=1):
        acc += c
        if acc >= share * total:
            return k
    return len(counts)


@pytest.mark.parametrize("family", ["opt", "llama", "gpt2"])
def test_ffn_profile_per_layer_matches_the_oracle(folders: dict[str, Path], family: str) -> None:
    _, suffix, fn = FAMILIES[family]
    prompts = tuple(ln for ln in folders["prompts"].read_text().splitlines() if ln.strip())
    expect, tokens, near, silent = oracle(folders[family], prompts, suffix, fn)
    report = audit_json(str(folders[family]), "--calib", str(folders["prompts"]), "--batch-size", "3")
    ffn = report["ffn"]
    assert [d["layer"] for d in ffn["layers"]] == list(range(tinymodels.LAYERS))
    for d, want, quiet in zip(ffn["layers"], expect, silent, strict=True):
        counts = [int(c) for c in want.tolist()]
        assert d["gated"] is (family == "llama")
        assert (d["neurons"], d["tokens"], d["sequences"]) == (tinymodels.FFN, tokens, len(prompts))
        assert d["dead"] == sum(c == 0 for c in counts)
        assert d["dead_fraction"] == pytest.approx(d["dead"] / tinymodels.FFN, abs=1e-6)
        silent_tokens = sum(tokens - c for c in counts) / tokens
        assert d["silent_per_token"] == pytest.approx(silent_tokens, abs=near / tokens + 1e-3)
        assert d["silent_per_sequence"] == pytest.approx(quiet / len(prompts), abs=near / len(prompts) + 1e-9)
        assert d["dead"] <= d["silent_per_sequence"] <= d["silent_per_token"]
        if near == 0:
            assert d["cold"] == tinymodels.FFN - hot_set_size(counts, ffn["hot_share"])
    assert ffn["dead"] == sum(d["dead"] for d in ffn["layers"])
