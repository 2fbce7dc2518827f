"""``actaudit prune`` on TorchScript, ``.pt2`` and state_dict + --arch: shapes by hand, drift by torch itself."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import prune_models as pm
import pytest
import torch
from click.testing import CliRunner

from actaudit.cli import cli

HERE = Path(__file__).resolve().parent  # prune_models.py lies beside this file


@pytest.fixture(scope="session")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("prune_torch")
    net = pm.build_torch()
    x = pm.calib()
    np.save(d / "x.npy", x)
    torch.jit.save(torch.jit.script(net), str(d / "net.ts"))
    ep = torch.export.export(net, (torch.from_numpy(x[:4]),), dynamic_shapes=({0: torch.export.Dim.AUTO},))
    torch.export.save(ep, str(d / "net.pt2"))
    torch.save(net.state_dict(), d / "sd.pt")
    (d / "arch.py").write_text(
        f"import sys\nsys.path.insert(0, {str(HERE)!r})\nimport prune_models\n\n"
        "def build():\n    return prune_models.build_torch(seed=9)\n"
    )
    pm.build_onnx(d / "net.onnx")
    return {
        "ts": d / "net.ts",
        "pt2": d / "net.pt2",
        "sd": d / "sd.pt",
        "arch": d / "arch.py",
        "x": d / "x.npy",
        "onnx": d / "net.onnx",
    }


def _reload(path: Path) -> tuple[Any, dict[str, torch.Tensor]]:
    if path.suffix == ".pt2":
        ep = torch.export.load(str(path))
        return ep.module(), dict(ep.state_dict)
    m = torch.jit.load(str(path))
    return m, dict(m.state_dict())


CASES = {
    "torchscript": ("ts", [], ".ts"),
    "pt2": ("pt2", [], ".pt2"),
    "state_dict-to-pt2": ("sd", ["--arch", "ARCH"], ".pt2"),
    "state_dict-to-ts": ("sd", ["--arch", "ARCH"], ".ts"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_prune_torch_formats(files: dict[str, Path], tmp_path: Path, case: str) -> None:
    src, extra, suffix = CASES[case]
    out = tmp_path / f"small{suffix}"
    args = ["prune", str(files[src]), "-o", str(out), "--calib", str(files["x"]), "--format", "json"]
    args += [str(files["arch"]) + ":build" if a == "ARCH" else a for a in extra]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    sites = {s["name"]: s for s in rep["sites"]}
    assert sites["s1"]["removed_units"] == pm.DEAD["s1"] and sites["s3"]["removed_units"] == pm.DEAD["s3"]
    assert (
        sites["s2"]["removed_units"] == pm.DEAD["s2"] and sites["s2"]["folded_units"] == pm.STUCK_HIGH["s2"]
    )
    assert sites["s7"]["folded_units"] == pm.STUCK_HIGH["s7"]
    for name, word in pm.KEPT_REASON.items():
        assert [k["unit"] for k in sites[name]["kept_units"]] == pm.DEAD[name]
        assert word in sites[name]["kept_units"][0]["reason"]
    s = rep["summary"]
    before = sum(math.prod(v) for v in pm.SHAPES.values())
    after = sum(math.prod(v) for v in pm.PRUNED.values())
    assert s["parameters_removed"] == before - after
    for key in ("drift", "drift_fresh", "drift_verified"):
        assert s[key]["relative_l2"] <= 1e-5
    model, state = _reload(out)
    for k, shape in pm.PRUNED.items():
        assert tuple(state[pm.torch_key(k)].shape) == pm.torch_shape(k, shape), k
    original = pm.build_torch()  # the state_dict overrides the seed-9 weights --arch builds
    x = torch.from_numpy(np.random.default_rng(42).uniform(0, 1, (24, 3, 8, 8)).astype(np.float32))
    with torch.no_grad():
        for a, b in zip(original(x), model(x), strict=True):
            assert float((a - b).norm() / a.norm()) <= 1e-5


def test_torch_bounds_match_onnx(files: dict[str, Path]) -> None:
    """The same network as ONNX and as .pt2 / TorchScript: the same units proven dead."""
    got = {}
    for fmt in ("onnx", "pt2", "ts"):
        r = CliRunner().invoke(
            cli,
            [
                "audit",
                str(files[fmt]),
                "--calib",
                str(files["x"]),
                "--input-range",
                "0,1",
                "--format",
                "json",
            ],
        )
        assert r.exit_code == 0, r.output
        got[fmt] = {s["name"]: s["proven_dead_units"] for s in json.loads(r.stdout)["sites"]}
    assert got["onnx"] == got["pt2"] == got["ts"]
    for name, dead in pm.DEAD.items():
        assert got["pt2"][name] == dead


def test_torchscript_keeps_its_format(files: dict[str, Path], tmp_path: Path) -> None:
    r = CliRunner().invoke(
        cli,
        [
            "prune",
            str(files["ts"]),
            "-o",
            str(tmp_path / "a.pt2"),
            "--calib",
            str(files["x"]),
            "--output-format",
            "pt2",
        ],
    )
    assert r.exit_code == 2 and "TorchScript" in r.output


class _Flat(torch.nn.Module):
    """Conv 3→6 (units 1 and 4 dead) → ReLU → view with a literal feature count → Linear."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.c = torch.nn.Conv2d(3, 6, 3)
        self.r = torch.nn.ReLU()
        self.fc = torch.nn.Linear(6 * 4 * 4, 3)
        with torch.no_grad():
            self.c.weight.clamp_(-0.3, 0.3)
            self.c.bias[[1, 4]] = -50.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.r(self.c(x)).view(x.shape[0], 96))


def test_pt2_literal_flatten_is_followed(tmp_path: Path) -> None:
    m = _Flat().eval()
    x = torch.rand(8, 3, 6, 6)
    torch.export.save(torch.export.export(m, (x,)), str(tmp_path / "f.pt2"))  # view(x, [8, 96]) in the graph
    np.save(tmp_path / "x.npy", x.numpy())
    out = tmp_path / "g.pt2"
    r = CliRunner().invoke(
        cli,
        [
            "prune",
            str(tmp_path / "f.pt2"),
            "-o",
            str(out),
            "--calib",
            str(tmp_path / "x.npy"),
            "--format",
            "json",
        ],
    )
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)["summary"]
    assert s["parameters_removed"] == 2 * 27 + 2 + 3 * 2 * 16  # conv rows and biases, 2 x 16 Linear columns
    assert s["macs_removed"] == 2 * 16 * 27 + 3 * 2 * 16
    got = torch.export.load(str(out)).module()
    with torch.no_grad():
        assert float((got(x) - m(x)).norm() / m(x).norm()) <= 1e-5


def test_torchscript_flatten_keeps_units_with_the_reason(tmp_path: Path) -> None:
    m = _Flat().eval()
    x = torch.rand(8, 3, 6, 6)
    torch.jit.save(torch.jit.trace(m, (x,)), str(tmp_path / "f.ts"))
    np.save(tmp_path / "x.npy", x.numpy())
    r = CliRunner().invoke(
        cli,
        [
            "prune",
            str(tmp_path / "f.ts"),
            "-o",
            str(tmp_path / "g.ts"),
            "--calib",
            str(tmp_path / "x.npy"),
            "--format",
            "json",
        ],
    )
    assert r.exit_code == 0, r.output
    (site,) = json.loads(r.stdout)["sites"]
    assert [k["unit"] for k in site["kept_units"]] == [1, 4] and "view" in site["kept_units"][0]["reason"]
    assert not (tmp_path / "g.ts").exists()
