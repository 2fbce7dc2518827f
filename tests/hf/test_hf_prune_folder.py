"""prune of a Hugging Face folder: one file (per-layer FFN widths), and a folder -o refused with why."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from click.testing import CliRunner

from actaudit.cli import cli
from tests.hf import tinymodels


def test_prune_of_a_folder_writes_one_file_and_says_why(tmp_path: Path) -> None:
    from tokenizers import Tokenizer
    from transformers import OPTForCausalLM

    folder = tmp_path / "opt"
    tinymodels.opt(folder, steps=0)
    calib = tmp_path / "p.txt"
    calib.write_text("\n".join(tinymodels.prompts(12, seed=5)))
    run = CliRunner().invoke

    r = run(cli, ["prune", str(folder), "--calib", str(calib), "-o", str(tmp_path / "small")])
    assert r.exit_code == 2
    assert "config.json holds one FFN width for every layer" in r.stderr and "-o pruned.pt" in r.stderr
    assert not (tmp_path / "small").exists()

    out = tmp_path / "small.pt"
    r = run(cli, ["prune", str(folder), "--calib", str(calib), "-o", str(out), "--format", "json"])
    assert r.exit_code == 0, r.stderr
    report = json.loads(r.stdout)
    assert any("not as a Hugging Face folder" in n for n in report["notes"])
    pruned = torch.load(out, weights_only=False).eval()
    widths = [int(pruned.model.decoder.layers[i].fc1.out_features) for i in range(tinymodels.LAYERS)]
    assert widths == [tinymodels.FFN - len(tinymodels.KILLED[i]) for i in range(tinymodels.LAYERS)]
    orig = OPTForCausalLM.from_pretrained(str(folder), local_files_only=True, dtype=torch.float32).eval()
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    with torch.no_grad():
        for line in calib.read_text().splitlines():
            ids = torch.tensor([tok.encode(line).ids])
            a, b = orig(input_ids=ids).logits, pruned(input_ids=ids).logits
            assert torch.allclose(a, b, rtol=0, atol=1e-4), (a - b).abs().max()
