"""Three tiers of evidence per unit, and the proof self-check on a sigmoid head.

On :mod:`prune_models` (weights ``|w| <= 0.25``): the sites fed by ReLU6 outputs (s3, s5; inputs
in [0, 6], six of them) and s6 (fed by averages of those) are dead from their weights alone,
whatever the input: 0.25 · 6 · 6 < 100. s1 and s2 read an unbounded input, so only the box
[0, 1] proves them.
"""

from __future__ import annotations

import json
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import prune_models as pm
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from actaudit.cli import cli
from actaudit.report.schema import errors


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("tiers")
    pm.build_onnx(d / "net.onnx")
    np.save(d / "x.npy", pm.calib())
    return d / "net.onnx", d / "x.npy"


def test_three_tiers(net: tuple[Path, Path], tmp_path: Path) -> None:
    args = ["prune", str(net[0]), "--calib", str(net[1]), "-o", str(tmp_path / "p.onnx")]
    r = CliRunner().invoke(cli, [*args, "--input-range", "0,1", "--format", "json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    sites = {s["name"]: s for s in rep["sites"]}
    weights = {n: s["dead_by_weights_units"] for n, s in sites.items() if s["dead_by_weights_units"]}
    assert weights == {"s3": pm.DEAD["s3"], "s5": pm.DEAD["s5"], "s6": pm.DEAD["s6"]}
    for name, dead in pm.DEAD.items():
        assert sites[name]["proven_dead_units_interval"] == dead
        assert sites[name]["proven_dead_units"] == dead
        assert sites[name]["data_dead_units"] == dead
    tiers = rep["summary"]["dead_units_by_evidence"]
    assert tiers == {"weights": 3, "box_interval": 6, "box_linear": 6, "data": 6}
    md = CliRunner().invoke(cli, [*args, "--force", "--input-range", "0,1", "--format", "markdown"])
    assert md.exit_code == 0 and "proven (linear)" in md.stdout


class SigmoidHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2, self.fc = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 6, 3), nn.Linear(24, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = nn.functional.max_pool2d(torch.relu(self.c1(x)), 2)
        return torch.sigmoid(self.fc(torch.relu(self.c2(y)).flatten(1)))


def test_sigmoid_head_proof_is_not_called_unsound(tmp_path: Path) -> None:
    """A sigmoid unit stuck low is *saturated* on the data, never *dead*: the self-check reads the
    low counter, so the sound proof of unit 0 (bias -40) is reported, not raised as a bug."""
    torch.manual_seed(0)
    m = SigmoidHead().eval()
    with torch.no_grad():
        m.fc.weight.mul_(0.1)
        m.fc.bias[0] = -40.0
    x = np.random.default_rng(0).uniform(-6, 6, (64, 1, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            m,
            (torch.from_numpy(x[:2]),),
            str(tmp_path / "m.onnx"),
            input_names=["x"],
            dynamic_axes={"x": {0: "N"}},
            dynamo=False,
        )
    args = ["audit", str(tmp_path / "m.onnx"), "--calib", str(tmp_path / "x.npy"), "--input-range=-6,6"]
    r = CliRunner().invoke(cli, [*args, "--format", "json"])
    assert r.exit_code in (0, 1), r.output
    sig = next(s for s in json.loads(r.stdout)["sites"] if s["kind"] == "sigmoid")
    assert sig["proven_dead_units"] == [0] and 0 in sig["saturated_units"]


def test_audit_reports_three_tiers(net: tuple[Path, Path], tmp_path: Path) -> None:
    """``audit --input-range``: the same tiers as prune's, per site and in total, in JSON (valid
    against the schema), the table and the HTML report."""
    html = tmp_path / "r.html"
    args = ["audit", str(net[0]), "--calib", str(net[1]), "--input-range", "0,1", "-q"]
    r = CliRunner().invoke(cli, [*args, "--format", "json", "--html", str(html)])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert errors(rep) == []
    sites = {s["name"]: s for s in rep["sites"]}
    weights = {n: s["dead_by_weights_units"] for n, s in sites.items() if s["dead_by_weights_units"]}
    assert weights == {"s3": pm.DEAD["s3"], "s5": pm.DEAD["s5"], "s6": pm.DEAD["s6"]}
    for name, dead in pm.DEAD.items():
        s = sites[name]
        assert s["proven_dead_units_interval"] == s["proven_dead_units"] == s["dead_units"] == dead
        assert s["dead_on_data_only_units"] == []
    assert rep["evidence"] == {"weights": 3, "box_interval": 6, "box_linear": 6, "data": 6, "data_only": 0}
    root = ET.parse(html).getroot()
    sec = next(e for e in root.iter("section") if e.get("id") == "evidence")
    assert (sec.get("data-weights"), sec.get("data-box-linear"), sec.get("data-data-only")) == ("3", "6", "0")
    rows = {tr.get("data-site"): tr for tr in sec.iter("tr") if tr.get("class") == "evidence"}
    assert set(rows) == set(pm.DEAD)
    assert rows["s1"].get("data-weights") == "0" and rows["s1"].get("data-box-linear") == "2"
    table = CliRunner().invoke(cli, args)
    assert table.exit_code == 0
    head = table.stdout.splitlines()[1]
    assert "by weights" in head and "proven dead" in head and "data only" in head


def test_audit_without_box_has_no_tiers(net: tuple[Path, Path]) -> None:
    r = CliRunner().invoke(cli, ["audit", str(net[0]), "--calib", str(net[1]), "-q", "--format", "json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert "evidence" not in rep and all("dead_by_weights_units" not in s for s in rep["sites"])


def test_unbounded_box_is_quiet(tmp_path: Path) -> None:
    """``--input-range=-inf,inf`` (the weights alone) through max pools, amax and ReLUs with one
    unbounded side: no numerical warning escapes, the weights tier is all there is."""
    import pool_models

    x = pool_models.calib()
    np.save(tmp_path / "x.npy", x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            pool_models.build(),
            (torch.from_numpy(x[:2]),),
            str(tmp_path / "m.onnx"),
            input_names=["x"],
            dynamic_axes={"x": {0: "N"}},
            dynamo=False,
        )
    args = ["audit", str(tmp_path / "m.onnx"), "--calib", str(tmp_path / "x.npy"), "--input-range=-inf,inf"]
    r = CliRunner().invoke(cli, [*args, "--format", "json"])
    assert r.exit_code in (0, 1), r.output
    assert "Warning" not in r.stderr
    ev = json.loads(r.stdout)["evidence"]
    assert ev["weights"] == ev["box_interval"] == ev["box_linear"]
