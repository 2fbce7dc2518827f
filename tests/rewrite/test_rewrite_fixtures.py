"""The generated fixtures (fixtures/expected.json) rewritten in every format: one answer whatever the format.

The fixtures force dead units with a bias of −1000, so any slope moves the outputs a lot
unless the mean shift is folded into the next layer: a hard case for the search.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from actaudit.cli import cli

FORMATS = ("torchscript", "export", "pickled", "state_dict", "onnx", "onnx_dynamo")


def _files(fixtures_dir: Path, expected: dict[str, Any], model: str) -> dict[str, Any]:
    m = expected["models"][model]
    missing = [f for f in m["files"].values() if not (fixtures_dir / f).exists()]
    assert not missing, f"fixture files missing (run `make fixtures`): {missing[:3]}"
    return m


def _rewrite(fixtures_dir: Path, m: dict[str, Any], kind: str, out: Path, *extra: str) -> dict[str, Any]:
    path = fixtures_dir / m["files"][kind]
    args = [
        str(path),
        "-o",
        str(out),
        "--calib",
        str(fixtures_dir / m["calib"]["npy"]),
        "--format",
        "json",
        *extra,
    ]
    if "--to" not in extra:  # these cover issue 4's one-α-per-site rewrite; the default is per unit
        args += ["--to", "leaky", "--alpha-range", "0.001,0.3", "--min-slope", "0.001", "--max-passes", "10"]
        if "--compensate" not in extra:
            args += ["--shift", "none"]
    elif "--slope-units" not in extra:
        args += ["--slope-units", "all", "--shift", "none"]
    if kind == "pickled":
        args.append("--trust-pickle")
    if kind == "state_dict":
        args += ["--arch", str(fixtures_dir.parent / m["arch"]), "--output-format", "pt2"]
    if "--mode" not in extra:
        args += ["--mode", "deploy"]  # the deploy mode's slopes are what these tests check
    r = CliRunner().invoke(cli, ["rewrite", *args])
    assert r.exit_code in (0, 1), r.output
    rep: dict[str, Any] = json.loads(r.stdout)
    rep["exit_code"] = r.exit_code
    return rep


@pytest.mark.slow
def test_cnn_dead_same_slopes_and_drift_in_every_format(
    fixtures_dir: Path, expected_fixtures: dict[str, Any], fixtures_on_path: Path, tmp_path: Path
) -> None:
    m = _files(fixtures_dir, expected_fixtures, "cnn_dead")
    dead = {s["name"]: len(s["dead_units"]) for s in m["sites"] if s["kind"] in ("relu", "relu6")}
    results = {}
    for kind in FORMATS:
        rep = _rewrite(fixtures_dir, m, kind, tmp_path / f"{kind}.out", "--max-drift", "0.05", "--compensate")
        results[kind] = rep
        rewritten = [s for s in rep["sites"] if s["status"] == "rewritten"]
        assert [s["dead"] for s in rewritten] == list(dead.values()), kind
        assert rep["passed"] and rep["exit_code"] == 0, kind
        assert rep["summary"]["drift_verified"]["relative_l2"] <= 0.05
        assert rep["search"]["passes"] <= rep["options"]["max_passes"]
    slopes = {k: [s["alpha"] for s in r["sites"] if s["status"] == "rewritten"] for k, r in results.items()}
    ref = slopes["torchscript"]
    for kind, got in slopes.items():
        assert got == pytest.approx(ref, rel=1e-3), kind  # ONNX runs in onnxruntime: last digits differ
    # the site after the global pool folds into fc exactly; the stem feeds a residual add and cannot
    comp = {
        s["name"]: s["compensation"] for s in results["onnx_dynamo"]["sites"] if s["status"] == "rewritten"
    }
    assert comp["stem_act"].startswith("not compensated")
    assert "fc" in comp["block.relu#1"] or "linear" in comp["block.relu#1"]


@pytest.mark.slow
def test_transformer_ffn_token_axis_prelu_and_fixed_alpha_gate(
    fixtures_dir: Path, expected_fixtures: dict[str, Any], tmp_path: Path
) -> None:
    import numpy as np
    import onnx
    from onnx import numpy_helper

    m = _files(fixtures_dir, expected_fixtures, "transformer_ffn")
    out = tmp_path / "t.onnx"
    rep = _rewrite(
        fixtures_dir, m, "onnx_dynamo", out, "--alpha", "0.01", "--max-drift", "1000", "--to", "prelu"
    )
    assert rep["exit_code"] == 0
    sites = [s for s in rep["sites"] if s["status"] == "rewritten"]
    assert sites and all(s["unit_axis"] == 2 for s in sites)  # [batch, tokens, features]
    model = onnx.load(str(out))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    slopes = [inits[n.input[1]] for n in model.graph.node if n.op_type == "PRelu"]
    assert sorted(x.shape for x in slopes) == sorted(
        (s["units"],) for s in sites
    )  # broadcasts on the last axis
    assert all(np.all(x == np.float32(0.01)) for x in slopes)
    # export: aten.prelu scales axis 1 only
    r = CliRunner().invoke(
        cli,
        [
            "rewrite",
            str(fixtures_dir / m["files"]["export"]),
            "-o",
            str(tmp_path / "t.pt2"),
            "--calib",
            str(fixtures_dir / m["calib"]["npy"]),
            "--to",
            "prelu",
            "--mode",
            "deploy",
        ],
    )
    # the default per-unit form transposes the feature axis onto axis 1 around aten.prelu, so it works
    assert r.exit_code == 0, r.output
    assert (tmp_path / "t.pt2").exists()
    (tmp_path / "t.pt2").unlink()
    # the dead units sit 1000 below zero: α = 0.01 is far over a 1 % budget, so nothing is written
    rep = _rewrite(fixtures_dir, m, "export", tmp_path / "t.pt2", "--alpha", "0.01")
    assert rep["exit_code"] == 1 and not rep["passed"]
    assert rep["output"]["written"] is False and not (tmp_path / "t.pt2").exists()
