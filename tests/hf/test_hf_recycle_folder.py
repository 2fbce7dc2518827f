"""rewrite --mode recycle of a Hugging Face folder goes back as a folder that transformers loads.

Recycling changes weights only (dead units' incoming rows re-initialised, their outgoing columns
zeroed), so the written folder is the input's config with new weights. It is reloaded here with
``from_pretrained`` and read back with ``safetensors`` directly, independently of the writer.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from actaudit.cli import cli
from tests.hf import tinymodels

FC1, FC2 = "model.decoder.layers.{}.fc1.{}", "model.decoder.layers.{}.fc2.weight"


@pytest.fixture(scope="module")
def opt_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("hfrecycle")
    folder = root / "opt"
    tinymodels.opt(folder, steps=0)
    (root / "p.txt").write_text("\n".join(tinymodels.prompts(12, seed=5)))
    return folder, root / "p.txt"


def _digests(folder: Path) -> dict[str, str]:
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in folder.iterdir()}


def _rewrite(*args: str) -> object:
    return CliRunner().invoke(cli, ["rewrite", *args])


def test_recycle_writes_a_folder_transformers_loads_with_the_same_outputs(
    opt_folder: tuple[Path, Path], tmp_path: Path
) -> None:
    from safetensors.torch import load_file
    from tokenizers import Tokenizer
    from transformers import OPTForCausalLM

    folder, calib = opt_folder
    before = _digests(folder)
    out = tmp_path / "opt-recycled"
    r = _rewrite(str(folder), "--calib", str(calib), "-o", str(out), "--mode", "recycle", "--format", "json")
    assert r.exit_code == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["output"]["written"] and report["output"]["format"] == "transformers"
    assert not any("not as a folder" in n for n in report.get("notes", []) + report["warnings"])
    assert _digests(folder) == before  # the input folder is untouched
    assert {f.name for f in out.iterdir()} == {
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
    }
    assert (out / "tokenizer.json").read_bytes() == (folder / "tokenizer.json").read_bytes()
    assert json.loads((out / "config.json").read_text())["architectures"] == ["OPTForCausalLM"]

    # Same function: logits of the written folder = the input folder's, on the calibration prompts.
    orig = OPTForCausalLM.from_pretrained(str(folder), local_files_only=True).eval()
    new = OPTForCausalLM.from_pretrained(str(out), local_files_only=True).eval()
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    with torch.no_grad():
        for line in calib.read_text().splitlines():
            ids = torch.tensor([tok.encode(line).ids])
            a, b = orig(input_ids=ids).logits, new(input_ids=ids).logits
            assert torch.allclose(a, b, rtol=0, atol=1e-5), (a - b).abs().max()

    # The weights as stored: recycled rows new, their fc2 columns zero, every other weight as it was.
    old_sd, new_sd = load_file(str(folder / "model.safetensors")), load_file(str(out / "model.safetensors"))
    recycled: dict[int, set[int]] = {}
    for layer in range(tinymodels.LAYERS):
        w_old, w_new = old_sd[FC1.format(layer, "weight")], new_sd[FC1.format(layer, "weight")]
        rows = {int(i) for i in torch.nonzero((w_old != w_new).any(dim=1)).flatten()}
        recycled[layer] = rows
        assert set(tinymodels.KILLED[layer]) <= rows  # the neurons killed on purpose are recycled
        fc2_old, fc2_new = old_sd[FC2.format(layer)], new_sd[FC2.format(layer)]
        for u in rows:
            assert torch.count_nonzero(fc2_new[:, u]) == 0
        keep = [u for u in range(tinymodels.FFN) if u not in rows]
        assert torch.equal(fc2_new[:, keep], fc2_old[:, keep])
        assert torch.equal(w_new[keep], w_old[keep])
    for name in old_sd.keys() - {k.format(i, "weight") for i in range(2) for k in (FC1, FC2)}:
        if not name.endswith("fc1.bias"):
            assert torch.equal(old_sd[name], new_sd[name]), name
    # the recycled units fire again: their new pre-activations are positive on some token
    ids = torch.tensor([tok.encode(calib.read_text().splitlines()[0]).ids])
    fired: dict[int, torch.Tensor] = {}
    hooks = [
        new.model.decoder.layers[i].fc1.register_forward_hook(
            lambda _m, _i, y, i=i: fired.__setitem__(i, (y > 0).reshape(-1, y.shape[-1]).any(dim=0))
        )
        for i in range(tinymodels.LAYERS)
    ]
    with torch.no_grad():
        new(input_ids=ids)
    for h in hooks:
        h.remove()
    for layer, units in tinymodels.KILLED.items():
        assert bool(fired[layer][units].any())


@pytest.mark.parametrize("mode", ["train", "recycle-leaky", "deploy", "learnable"])
def test_a_folder_output_for_a_mode_that_adds_slopes_is_refused(
    opt_folder: tuple[Path, Path], tmp_path: Path, mode: str
) -> None:
    folder, calib = opt_folder
    out = tmp_path / "opt-out"
    r = _rewrite(str(folder), "--calib", str(calib), "-o", str(out), "--mode", mode)
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "--mode recycle" in lines[0] and "file" in lines[0], r.stderr
    assert "Traceback" not in r.output
    assert not out.exists()


def test_a_folder_output_inside_the_input_or_existing_is_refused(
    opt_folder: tuple[Path, Path], tmp_path: Path
) -> None:
    folder, calib = opt_folder
    before = _digests(folder)
    inside = folder / "recycled"
    r = _rewrite(str(folder), "--calib", str(calib), "-o", str(inside), "--mode", "recycle", "--force")
    assert r.exit_code == 2, r.output
    assert "inside" in r.stderr and "input" in r.stderr and not inside.exists()
    r = _rewrite(str(folder), "--calib", str(calib), "-o", str(folder), "--mode", "recycle", "--force")
    assert r.exit_code == 2 and "is a directory" in r.stderr, r.output  # an existing folder: never replaced
    existing = tmp_path / "taken"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    r = _rewrite(str(folder), "--calib", str(calib), "-o", str(existing), "--mode", "recycle", "--force")
    assert r.exit_code == 2 and "is a directory" in r.stderr, r.output
    assert [f.name for f in existing.iterdir()] == ["keep.txt"]
    assert _digests(folder) == before


def test_the_library_refuses_a_folder_output_for_slopes_before_writing(
    opt_folder: tuple[Path, Path], tmp_path: Path
) -> None:
    from actaudit.errors import InputError
    from actaudit.rewrite import rewrite

    folder, calib = opt_folder
    out = tmp_path / "deployed"
    with pytest.raises(InputError, match="--mode recycle"):
        rewrite(str(folder), str(calib), output=str(out), mode="deploy")
    assert not out.exists()
