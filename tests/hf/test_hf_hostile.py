"""Hugging Face folders that try to run code or read outside themselves are refused with exit 2."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from actaudit.cli import cli
from tests.hf import tinymodels

EVIL = """
from pathlib import Path
Path(MARKER).write_text("code from the folder ran")
from transformers import OPTForCausalLM
class EvilModel(OPTForCausalLM):
    pass
"""


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("hostile") / "opt"
    tinymodels.opt(folder, steps=0)
    return folder


def _copy(plain: Path, tmp_path: Path) -> Path:
    out = tmp_path / "m"
    shutil.copytree(plain, out)
    return out


def _audit(folder: Path, *flags: str) -> tuple[int, str]:
    r = CliRunner().invoke(cli, ["audit", str(folder), "--input-shape", "2x6", "--val-range", "5,28", *flags])
    return r.exit_code, r.stderr


def _edit_config(folder: Path, **changes: object) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


def test_plain_folder_audits_and_inspects(plain: Path) -> None:
    code, err = _audit(plain)
    assert code == 0, err
    r = CliRunner().invoke(cli, ["inspect", str(plain)])
    assert r.exit_code == 0, r.stderr
    assert "model.decoder.layers.1.activation_fn" in r.stdout and "input_ids" in r.stdout


def test_auto_map_code_is_refused_without_trust_code(plain: Path, tmp_path: Path, monkeypatch) -> None:
    folder = _copy(plain, tmp_path)
    marker = tmp_path / "RAN"
    (folder / "evil.py").write_text(EVIL.replace("MARKER", repr(str(marker))))
    _edit_config(folder, auto_map={"AutoModelForCausalLM": "evil.EvilModel"}, architectures=["EvilModel"])
    code, err = _audit(folder)
    assert code == 2
    assert "auto_map" in err and "--trust-code" in err
    assert err.count("\n") == 1  # one line, no traceback
    assert not marker.exists()
    # With the flag the folder's code is what builds the model (copied by transformers into its
    # module cache, here a temporary folder).
    from transformers import dynamic_module_utils

    monkeypatch.setattr(dynamic_module_utils, "HF_MODULES_CACHE", str(tmp_path / "modules"))
    monkeypatch.setattr(sys, "path", list(sys.path))
    code, err = _audit(folder, "--trust-code")
    assert code == 0, err
    assert marker.exists()


@pytest.mark.parametrize(
    "shard", ["../outside.safetensors", "/etc/passwd", "sub/x.safetensors", "absent.safetensors"]
)
def test_index_shard_names_stay_in_the_folder(plain: Path, tmp_path: Path, shard: str) -> None:
    folder = _copy(plain, tmp_path)
    (folder / "model.safetensors").rename(tmp_path / "outside.safetensors")
    (folder / "sub").mkdir()
    shutil.copy(tmp_path / "outside.safetensors", folder / "sub" / "x.safetensors")
    from safetensors import safe_open

    with safe_open(str(tmp_path / "outside.safetensors"), "pt") as f:
        keys = list(f.keys())
    index = {"metadata": {}, "weight_map": dict.fromkeys(keys, shard)}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    code, err = _audit(folder)
    assert code == 2
    assert "not a plain file name" in err or "missing or not a regular file" in err


def test_index_must_match_its_shards(plain: Path, tmp_path: Path) -> None:
    folder = _copy(plain, tmp_path)
    (folder / "model.safetensors").rename(folder / "a.safetensors")
    from safetensors import safe_open

    with safe_open(str(folder / "a.safetensors"), "pt") as f:
        keys = list(f.keys())
    index = {"weight_map": {**dict.fromkeys(keys[1:], "a.safetensors"), "ghost.weight": "a.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    code, err = _audit(folder)
    assert code == 2
    assert "ghost.weight" in err and keys[0] in err


def test_pickled_weights_need_trust_pickle(plain: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    folder = _copy(plain, tmp_path)
    sd = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    torch.save(sd, folder / "pytorch_model.bin")
    code, err = _audit(folder)
    assert code == 2
    assert "--trust-pickle" in err
    code, err = _audit(folder, "--trust-pickle")
    assert code == 0, err


@pytest.mark.parametrize("arch", ["AutoConfig", "os.system", "NotAModel", "__import__"])
def test_architecture_must_be_a_model_class_of_the_library(plain: Path, tmp_path: Path, arch: str) -> None:
    folder = _copy(plain, tmp_path)
    _edit_config(folder, architectures=[arch])
    code, err = _audit(folder)
    assert code == 2
    assert "not a model class of transformers" in err


def test_unknown_model_type_and_broken_config(plain: Path, tmp_path: Path) -> None:
    folder = _copy(plain, tmp_path)
    _edit_config(folder, model_type="no-such-model")
    code, err = _audit(folder)
    assert code == 2 and "no-such-model" in err
    (folder / "config.json").write_text("{not json")
    code, err = _audit(folder)
    assert code == 2 and "not valid JSON" in err


def test_folder_without_config_says_what_a_folder_needs(tmp_path: Path) -> None:
    code, err = _audit(tmp_path)
    assert code == 2
    assert "config.json" in err and "model.safetensors" in err


def test_missing_transformers_gives_the_install_line(plain: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)
    code, err = _audit(plain)
    assert code == 2
    assert "pip install 'actaudit[hf]'" in err


def test_hub_cache_layout_with_links_and_bf16_weights(plain: Path, tmp_path: Path) -> None:
    """A snapshot folder of the hub's cache links its files to blobs: links are followed, names are not paths."""
    from safetensors.torch import load_file, save_file

    blobs, snap = tmp_path / "blobs", tmp_path / "snapshots" / "abc"
    blobs.mkdir()
    snap.mkdir(parents=True)
    sd = {
        k: v.to(torch.bfloat16) if v.is_floating_point() else v
        for k, v in load_file(plain / "model.safetensors").items()
    }
    save_file(sd, blobs / "w")
    shutil.copy(plain / "config.json", blobs / "c")
    (snap / "model.safetensors").symlink_to(blobs / "w")
    (snap / "config.json").symlink_to(blobs / "c")
    r = CliRunner().invoke(
        cli, ["audit", str(snap), "--input-shape", "2x6", "--val-range", "5,28", "--format", "json"]
    )
    assert r.exit_code == 0, r.stderr
    assert any("stored as bfloat16, audited in float32" in w for w in json.loads(r.stdout)["warnings"])


def test_attention_kernel_from_the_hub_is_not_fetched(plain: Path, tmp_path: Path) -> None:
    """A config naming a hub kernel would have transformers fetch and run its code: sdpa is used instead."""
    folder = _copy(plain, tmp_path)
    _edit_config(
        folder,
        attn_implementation="kernels-community/flash-attn",
        _attn_implementation="kernels-community/flash-attn",
    )
    r = CliRunner().invoke(
        cli, ["audit", str(folder), "--input-shape", "2x6", "--val-range", "5,28", "--format", "json"]
    )
    assert r.exit_code == 0, r.stderr
    assert any("the audit uses sdpa" in w for w in json.loads(r.stdout)["warnings"])


def test_names_from_the_folder_reach_the_terminal_without_escapes(plain: Path, tmp_path: Path) -> None:
    folder = _copy(plain, tmp_path)
    _edit_config(folder, auto_map={"AutoModel\x1b[2J\x1b[31m": "evil.X"})
    code, err = _audit(folder)
    assert code == 2 and "--trust-code" in err
    assert "\x1b" not in err
