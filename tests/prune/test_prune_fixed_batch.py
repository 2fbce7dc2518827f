"""Prune of programs exported with a fixed batch size: data goes through the audit's re-chunking.

40 calibration samples against a batch of 16: every run must feed exactly 16 samples
(two chunks, the last 8 left out), in every format; the cut is the one the network was
built with (:mod:`prune_models`), the same in each.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnx
import prune_models as pm
import pytest
import torch
from click.testing import CliRunner

from actaudit.cli import cli

BATCH = 16


@pytest.fixture(scope="module")
def fixed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("prune_fixed")
    net, x = pm.build_torch(), pm.calib(40)
    np.save(d / "x.npy", x)
    example = (torch.from_numpy(x[:BATCH]),)
    torch.export.save(torch.export.export(net, example), str(d / "net.pt2"))
    torch.jit.save(torch.jit.trace(net, example), str(d / "net.ts"))
    pm.build_onnx(d / "dyn.onnx")
    m = onnx.load(str(d / "dyn.onnx"))
    for vi in [*m.graph.input, *m.graph.output]:
        dim = vi.type.tensor_type.shape.dim[0]
        dim.Clear()
        dim.dim_value = BATCH
    onnx.save(m, str(d / "net.onnx"))
    return {"pt2": d / "net.pt2", "ts": d / "net.ts", "onnx": d / "net.onnx", "x": d / "x.npy"}


@pytest.mark.parametrize("fmt", ["pt2", "ts", "onnx"])
def test_fixed_batch_prune(fixed: dict[str, Path], tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"small.{fmt}"
    args = ["prune", str(fixed[fmt]), "-o", str(out), "--calib", str(fixed["x"]), "--format", "json"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    sites = {s["name"]: s for s in rep["sites"]}
    removed = {n: s["removed_units"] for n, s in sites.items() if s["removed_units"]}
    assert removed == {"s1": pm.DEAD["s1"], "s2": pm.DEAD["s2"], "s3": pm.DEAD["s3"]}
    assert sites["s2"]["folded_units"] == pm.STUCK_HIGH["s2"]
    before = sum(math.prod(v) for v in pm.SHAPES.values())
    after = sum(math.prod(v) for v in pm.PRUNED.values())
    assert rep["summary"]["parameters_removed"] == before - after
    assert rep["summary"]["drift_verified"]["relative_l2"] <= 1e-5
    assert out.exists()


def test_fixed_batch_pt2_proofs(fixed: dict[str, Path]) -> None:
    """``audit --input-range`` binds its example the same way: the proofs run on a fixed-batch program."""
    args = [
        "audit",
        str(fixed["pt2"]),
        "--calib",
        str(fixed["x"]),
        "--input-range",
        "0,1",
        "--format",
        "json",
    ]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    got = {s["name"]: s["proven_dead_units"] for s in json.loads(r.stdout)["sites"]}
    for name, dead in pm.DEAD.items():
        assert got[name] == dead
