"""The audit ends with what to do: one next-step line per finding kind, naming this model and its data.

Which kinds must appear follows from the fixtures' construction (fixtures/README: cnn_dead has
dead ReLU units, a ReLU6 unit stuck at its cap and a tanh output head) and from the model
built here (a ReLU fused into ``aten::_addmm_activation``, which no capture sees).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from click.testing import CliRunner
from torch import nn

from actaudit.cli import cli

ROOT = Path(__file__).resolve().parents[2]
MODEL = str(ROOT / "fixtures/models/cnn_dead.pt2")
CALIB = str(ROOT / "fixtures/data/cnn_images.npy")


def _kinds(steps: list[str]) -> dict[str, str]:
    return {s.split(":", 1)[0]: s for s in steps}


def _audit(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(cli, ["audit", *args])
    return r.exit_code, r.stdout, r.stderr


def test_dead_coverage_head_and_saturated_steps() -> None:
    code, out, _ = _audit(MODEL, "--calib", CALIB, "--format", "json")
    assert code == 0
    d = json.loads(out)
    kinds = _kinds(d["next_steps"])
    assert set(kinds) == {"dead", "coverage", "output head", "saturated"}
    rewrite = f"actaudit rewrite {MODEL} --calib {CALIB} -o {MODEL[: -len('.pt2')]}_revived.pt2"
    assert rewrite in d["next_steps"][0]
    assert f"actaudit prune {MODEL} --calib {CALIB} -o" in d["next_steps"][0]
    samples = d["calibration"]["samples"]
    assert samples < 3000  # the fixture's 128 images: not enough for a 0.1 % bound
    assert "≥ 3000 samples" in kinds["coverage"] and f"{samples} samples" in kinds["coverage"]
    assert "fc_act" in kinds["saturated"]  # the ReLU6 unit at its cap: prune folds it
    assert "matters only if" in kinds["output head"]
    # the table ends with the same lines
    code, table, _ = _audit(MODEL, "--calib", CALIB)
    tail = [line.removeprefix("next: ") for line in table.splitlines() if line.startswith("next: ")]
    assert tail == d["next_steps"]
    assert table.rstrip().splitlines()[-1].startswith("next: ")


def test_state_dict_steps_carry_arch(tmp_path: Path) -> None:
    """A state_dict needs its --arch in the suggested commands, and gets a TorchScript output."""
    arch = tmp_path / "net.py"
    arch.write_text(
        "from torch import nn\n\ndef build():\n    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))\n"
    )
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    with torch.no_grad():
        net[0].weight[1] = 0.0
        net[0].bias[1] = -5.0  # unit 1 never fires
        net[0].bias[[0, 2, 3]] = 5.0
        net[0].weight[[0, 2, 3]] *= 0.1
    torch.save(net.state_dict(), tmp_path / "w.pt")
    import numpy as np

    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((8, 3), dtype=np.float32))
    code, out, _ = _audit(
        str(tmp_path / "w.pt"),
        "--arch",
        f"{arch}:build",
        "--calib",
        str(tmp_path / "x.npy"),
        "--format",
        "json",
    )
    assert code == 0
    steps = json.loads(out)["next_steps"]
    assert json.loads(out)["summary"]["dead"] == 1
    assert f"--arch {arch}:build --calib {tmp_path / 'x.npy'} -o {tmp_path / 'w_revived.ts'}" in steps[0]
    assert set(_kinds(steps)) == {"dead", "coverage"}


class _Mixed(nn.Module):
    """One visible ReLU, then a ReLU fused into ``aten::_addmm_activation``, which no capture sees."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 16)
        self.act = nn.ReLU()
        self.w = nn.Parameter(torch.randn(16, 16) * 0.3)
        self.b = nn.Parameter(torch.zeros(16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch._addmm_activation(self.b, self.act(self.fc(x)), self.w)


def test_synthetic_and_uncovered_steps(tmp_path: Path) -> None:
    torch.manual_seed(1)
    path = tmp_path / "mixed.ts"
    with torch.no_grad():
        torch.jit.trace(_Mixed().eval(), torch.randn(2, 16), check_trace=False).save(str(path))
    code, out, _ = _audit(str(path), "--trust-code", "--input-shape", "4x16", "--format", "json")
    assert code == 0
    d = json.loads(out)
    assert d["summary"]["uncovered"] == 1 and d["calibration"]["synthetic"]
    kinds = _kinds(d["next_steps"])
    assert {"data", "uncovered"} <= set(kinds)
    assert "--calib" in kinds["data"]


def test_nothing_found_no_steps(tmp_path: Path) -> None:
    """A model with every unit alive gets no next-step line (and no next_steps key)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    with torch.no_grad():
        net[0].weight.mul_(0.1)
        net[0].bias.fill_(1.0)  # every unit fires on every input in [0, 1)
    path = tmp_path / "alive.pt2"
    torch.export.save(torch.export.export(net, (torch.zeros(2, 3),)), str(path))
    import numpy as np

    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((8, 3), dtype=np.float32))
    code, out, _ = _audit(str(path), "--calib", str(tmp_path / "x.npy"), "--format", "json")
    assert code == 0
    d = json.loads(out)
    assert d["summary"]["dead"] == 0 and "next_steps" not in d


def test_input_shape_with_calib_is_refused() -> None:
    code, out, err = _audit(MODEL, "--calib", CALIB, "--input-shape", "1x3x16x16")
    assert code == 2 and out == ""
    assert "--input-shape" in err and "--calib" in err and "Traceback" not in err


def test_no_bounded_units_no_saturation_clause(tmp_path: Path) -> None:
    """A model without sigmoid/tanh/caps: the summary says nothing of '0 saturated of 0 bounded units'."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    path = tmp_path / "relu.pt2"
    torch.export.save(torch.export.export(net, (torch.zeros(2, 3),)), str(path))
    import numpy as np

    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((8, 3), dtype=np.float32))
    code, out, _ = _audit(str(path), "--calib", str(tmp_path / "x.npy"))
    assert code == 0
    assert "of 4 rectifier units" in out and "bounded units" not in out


def test_float64_data_gets_one_note_per_input(tmp_path: Path) -> None:
    """float64 data for a float32 model is rounded: said once (not once per batch), in torch and ONNX."""
    import warnings

    import numpy as np

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    pt2, onnx = tmp_path / "m.pt2", tmp_path / "m.onnx"
    torch.export.save(torch.export.export(net, (torch.zeros(2, 3),)), str(pt2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (torch.zeros(2, 3),),
            str(onnx),
            dynamo=False,
            input_names=["x"],
            dynamic_axes={"x": {0: "n"}},
        )
    x = np.random.default_rng(0).random((70, 3))
    np.save(tmp_path / "x64.npy", x)
    np.save(tmp_path / "x32.npy", x.astype(np.float32))
    for model in (pt2, onnx):
        _, out, _ = _audit(
            str(model), "--calib", str(tmp_path / "x64.npy"), "--batch-size", "16", "--format", "json"
        )
        notes = [n for n in json.loads(out).get("notes", []) if "float64" in n]
        assert len(notes) == 1 and "float32" in notes[0], (model, notes)
        _, out, _ = _audit(str(model), "--calib", str(tmp_path / "x32.npy"), "--format", "json")
        assert not [n for n in json.loads(out).get("notes", []) if "converted" in n]
