"""safetensors state_dicts, --strip-prefix for Lightning / EMA checkpoints, --non-strict, and
refusals that name the classes that are really unsafe (issue 12).

The models have dead channels by construction (a bias of -50), so which weights were loaded
shows in the verdicts.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from click.testing import CliRunner
from safetensors.torch import save_file

from actaudit.cli import cli
from actaudit.detect import SAFETENSORS, detect_format

ARCH = """
import torch.nn as nn

def build():
    return nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU())
"""


def _weights(dead: list[int], seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU())
    with torch.no_grad():
        m[0].bias.zero_()
        m[0].bias[dead] = -50.0
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


class Hparams:
    """Stands for the config objects training frameworks pickle beside the weights."""

    def __init__(self) -> None:
        self.lr = 0.1


@pytest.fixture()
def setup(tmp_path: Path) -> tuple[Path, Path]:
    arch = tmp_path / "arch.py"
    arch.write_text(ARCH)
    data = tmp_path / "x.npy"
    np.save(data, np.random.default_rng(0).standard_normal((16, 3, 8, 8)).astype(np.float32))
    return arch, data


def _audit(*args: str) -> tuple[int, dict | None, str]:
    r = CliRunner().invoke(cli, ["audit", *args, "--format", "json", "-q"])
    return r.exit_code, (json.loads(r.stdout) if r.exit_code in (0, 1) else None), r.stderr


def _dead(report: dict) -> list[int]:
    (site,) = report["sites"]
    return site["dead_units"]


def test_safetensors_state_dict_with_arch(setup, tmp_path) -> None:
    arch, data = setup
    path = tmp_path / "w.safetensors"
    save_file(_weights([1, 4], seed=1), str(path))
    assert detect_format(path) == SAFETENSORS
    code, rep, err = _audit(str(path), "--arch", f"{arch}:build", "--calib", str(data))
    assert code == 0, err
    assert rep is not None and _dead(rep) == [1, 4]


def test_safetensors_is_never_taken_for_onnx(tmp_path) -> None:
    """A header length whose first bytes read 0x08 0x03 looks like ONNX's ir_version field."""
    w = _weights([0], seed=2)
    for k in range(400):
        path = tmp_path / "w.bin"
        save_file(w, str(path), metadata={"pad": "x" * k})
        head = path.read_bytes()[:2]
        if head[0] == 0x08 and 1 <= head[1] <= 20:
            break
    else:
        pytest.fail("no padding gave an ONNX-looking header")
    assert detect_format(path) == SAFETENSORS


def test_strip_prefix_picks_model_or_ema_weights(setup, tmp_path) -> None:
    arch, data = setup
    model, ema = _weights([2], seed=3), _weights([0, 5], seed=4)
    sd = {**{f"model.{k}": v for k, v in model.items()}, **{f"model_ema.{k}": v for k, v in ema.items()}}
    path = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": sd, "epoch": 3}, path)
    base = [str(path), "--arch", f"{arch}:build", "--calib", str(data), "--state-key", "state_dict"]
    code, _, err = _audit(*base)
    assert code == 2 and "unexpected" in err
    code, rep, err = _audit(*base, "--strip-prefix", "model.")
    assert code == 0, err
    assert rep is not None and _dead(rep) == [2]
    code, rep, err = _audit(*base, "--strip-prefix", "model_ema.")
    assert code == 0, err
    assert rep is not None and _dead(rep) == [0, 5]
    code, _, err = _audit(*base, "--strip-prefix", "net.")
    assert code == 2 and "no key" in err and "net." in err


def test_nested_prefixes_strip_in_order(setup, tmp_path) -> None:
    arch, data = setup
    sd = {f"model.model.{k}": v for k, v in _weights([3], seed=5).items()}
    path = tmp_path / "nested.pt"
    torch.save(sd, path)
    code, rep, err = _audit(
        str(path),
        "--arch",
        f"{arch}:build",
        "--calib",
        str(data),
        "--strip-prefix",
        "model.",
        "--strip-prefix",
        "model.",
    )
    assert code == 0, err
    assert rep is not None and _dead(rep) == [3]


def test_non_strict_loads_matching_keys_and_lists_the_rest(setup, tmp_path) -> None:
    arch, data = setup
    sd = {**_weights([1], seed=6), "loss.pos_weight": torch.ones(3)}
    path = tmp_path / "extra.pt"
    torch.save(sd, path)
    code, _, err = _audit(str(path), "--arch", f"{arch}:build", "--calib", str(data))
    assert code == 2 and "loss.pos_weight" in err
    r = CliRunner().invoke(
        cli,
        [
            "audit",
            str(path),
            "--arch",
            f"{arch}:build",
            "--calib",
            str(data),
            "--non-strict",
            "--format",
            "json",
        ],
    )
    assert r.exit_code == 0, r.stderr
    assert _dead(json.loads(r.stdout)) == [1]
    assert "loss.pos_weight" in r.stderr
    # Weights the model needs and the checkpoint lacks stay fatal.
    del sd["0.bias"]
    torch.save(sd, path)
    code, _, err = _audit(str(path), "--arch", f"{arch}:build", "--calib", str(data), "--non-strict")
    assert code == 2 and "missing: 0.bias" in err


def test_refusal_names_the_unsafe_classes_not_builtins(tmp_path) -> None:
    """torch.save pickles with protocol 2, which writes builtins as ``__builtin__``."""
    path = tmp_path / "ckpt.pt"
    torch.save({"state_dict": _weights([0], seed=7), "hparams": Hparams(), "tags": {1, 2}}, path)
    code, _, err = _audit(str(path), "--input-shape", "1x3x8x8")
    assert code == 2 and "refusing" in err
    assert "test_load_breadth.Hparams" in err
    assert "__builtin__" not in err and "builtins" not in err
