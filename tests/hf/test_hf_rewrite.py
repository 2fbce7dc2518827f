"""rewrite of a Hugging Face folder: verified, written as one file (config.json cannot hold the slopes)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from click.testing import CliRunner

from actaudit.cli import cli
from tests.hf import tinymodels


def test_rewrite_of_a_folder_revives_its_dead_ffn_neurons(tmp_path: Path) -> None:
    folder = tmp_path / "opt"
    tinymodels.opt(folder, steps=0)
    (tmp_path / "p.txt").write_text("\n".join(tinymodels.prompts(12, seed=5)))
    out = tmp_path / "opt-leaky.pt"
    r = CliRunner().invoke(
        cli, ["rewrite", str(folder), "--calib", str(tmp_path / "p.txt"), "-o", str(out), "--format", "json"]
    )
    assert r.exit_code == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["output"]["written"] and report["output"]["format"] == "pickled-module"
    assert any("not as a folder" in n for n in report.get("notes", []) + report["warnings"])
    revived = {s["site"] for s in report["output"]["slopes_in_file"]}
    assert revived == {f"model.decoder.layers.{i}.activation_fn" for i in tinymodels.KILLED}
    model = torch.load(out, weights_only=False)  # written by this test: trusted
    assert type(model).__name__ == "OPTForCausalLM"
    assert {f.name for f in folder.iterdir()} == {
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
    }
