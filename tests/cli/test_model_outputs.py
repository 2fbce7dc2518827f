"""rewrite and prune never write over an input: the model, the calibration data, a loader or arch file.

The refusal comes before the run (exit 2, one line), with or without ``--force``, and the
input's bytes stay what they were.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from actaudit.cli import cli

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def inputs(tmp_path) -> dict[str, Path]:
    model = tmp_path / "m.onnx"
    calib = tmp_path / "x.npy"
    shutil.copy(ROOT / "fixtures/models/cnn_dead.onnx", model)
    shutil.copy(ROOT / "fixtures/data/cnn_images.npy", calib)
    return {"model": model, "calib": calib}


def _digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.mark.parametrize("command", ["prune", "rewrite"])
@pytest.mark.parametrize(
    "where",
    [
        ("-o", "calib", "--force"),  # the model written over the calibration data
        ("--report", "calib"),  # the report written over the calibration data
        ("--report", "model"),  # the report written over the model
    ],
)
def test_an_output_on_an_input_is_refused_before_the_run(inputs, tmp_path, command, where) -> None:
    option, target, *force = where
    before = {k: _digest(p) for k, p in inputs.items()}
    args = [command, str(inputs["model"]), "--calib", str(inputs["calib"])]
    if option == "-o":
        args += ["-o", str(inputs[target]), *force]
    else:
        args += ["-o", str(tmp_path / "out.onnx"), option, str(inputs[target])]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    assert "input" in r.stderr and str(inputs[target]) in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out.onnx").exists()
    assert {k: _digest(p) for k, p in inputs.items()} == before


def test_prune_still_writes_beside_its_inputs(inputs, tmp_path) -> None:
    out, report = tmp_path / "small.onnx", tmp_path / "prune.json"
    r = CliRunner().invoke(
        cli,
        [
            "prune",
            str(inputs["model"]),
            "--calib",
            str(inputs["calib"]),
            "-o",
            str(out),
            "--report",
            str(report),
            "--format",
            "json",
        ],
    )
    assert r.exit_code == 0, r.output
    assert out.stat().st_size > 0 and report.read_text().lstrip().startswith("{")
