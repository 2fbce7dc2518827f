"""bf16 and fp16 Hugging Face folders: audited in float32 (with a note), written back in their own dtype.

The oracle loads the folder with ``transformers``' own ``from_pretrained`` in float32 and counts,
with a forward pre-hook on each ``activation_fn``, the neurons that never see a positive
pre-activation; the written folder's dtypes are read from its safetensors files directly.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner

from actaudit.cli import cli
from tests.hf import tinymodels

SAFE = {torch.bfloat16: "BF16", torch.float16: "F16"}


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("hfdtype")
    tinymodels.opt(root / "f32", steps=5)
    (root / "p.txt").write_text("\n".join(tinymodels.prompts(12, seed=5)))
    return root, root / "p.txt"


def half_folder(root: Path, dtype: torch.dtype) -> Path:
    from transformers import OPTForCausalLM

    folder = root / SAFE[dtype]
    if not folder.exists():
        m = OPTForCausalLM.from_pretrained(str(root / "f32"), local_files_only=True, dtype=dtype)
        m.save_pretrained(folder)
        shutil.copyfile(root / "f32" / "tokenizer.json", folder / "tokenizer.json")
    return folder


def dead_by_hooks(folder: Path, calib: Path) -> list[list[int]]:
    from tokenizers import Tokenizer
    from transformers import OPTForCausalLM

    m = OPTForCausalLM.from_pretrained(str(folder), local_files_only=True, dtype=torch.float32).eval()
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    layers = m.model.decoder.layers
    fired = [torch.zeros(tinymodels.FFN, dtype=torch.bool) for _ in layers]

    def hook(i: int) -> Any:
        def f(mod: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            fired[i] |= (args[0].reshape(-1, tinymodels.FFN) > 0).any(0)

        return f

    hooks = [layer.activation_fn.register_forward_pre_hook(hook(i)) for i, layer in enumerate(layers)]
    with torch.no_grad():
        for line in calib.read_text().splitlines():
            m(input_ids=torch.tensor([tok.encode(line).ids]))
    for h in hooks:
        h.remove()
    return [torch.nonzero(~f).flatten().tolist() for f in fired]


def stored(folder: Path) -> set[str]:
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), framework="pt") as st:
        return {st.get_slice(k).get_dtype() for k in st.keys()}  # noqa: SIM118


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_folder_audits_in_float32_and_recycles_back_in_its_dtype(
    source: tuple[Path, Path], tmp_path: Path, dtype: torch.dtype
) -> None:
    from tokenizers import Tokenizer
    from transformers import OPTForCausalLM

    root, calib = source
    folder = half_folder(root, dtype)
    assert stored(folder) == {SAFE[dtype]}
    name = str(dtype).removeprefix("torch.")

    r = CliRunner().invoke(cli, ["audit", str(folder), "--calib", str(calib), "--format", "json"])
    assert r.exit_code == 0, r.stderr
    report = json.loads(r.stdout)
    assert f"weights stored as {name}, audited in float32" in r.stderr + " ".join(report["warnings"])
    want = dead_by_hooks(folder, calib)
    assert [s["dead_units"] for s in report["sites"]] == want
    for layer, units in tinymodels.KILLED.items():
        assert set(units) <= set(want[layer])

    out = tmp_path / "recycled"
    r = CliRunner().invoke(
        cli,
        [
            "rewrite",
            str(folder),
            "--calib",
            str(calib),
            "--mode",
            "recycle",
            "-o",
            str(out),
            "--format",
            "json",
        ],
    )
    assert r.exit_code == 0, r.stderr
    assert stored(out) == {SAFE[dtype]}  # every tensor in the input's dtype, none widened to F32
    assert json.loads((out / "config.json").read_text()).get("dtype") == name
    orig = OPTForCausalLM.from_pretrained(str(folder), local_files_only=True, dtype=torch.float32).eval()
    new = OPTForCausalLM.from_pretrained(str(out), local_files_only=True, dtype=torch.float32).eval()
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    with torch.no_grad():
        for line in calib.read_text().splitlines():
            ids = torch.tensor([tok.encode(line).ids])
            # Recycled units' outgoing columns are exact zeros in any dtype: the function is kept.
            assert torch.allclose(orig(input_ids=ids).logits, new(input_ids=ids).logits, rtol=0, atol=1e-5)
    after = dead_by_hooks(out, calib)
    assert sum(map(len, after)) < sum(map(len, want))  # recycled units fire again after the rounding
