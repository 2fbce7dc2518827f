"""Bad calibration data: a clear error, or non-finite values counted and reported, never a silent verdict."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from actaudit.cli import cli


def _audit(*args):
    return CliRunner().invoke(cli, ["audit", *map(str, args)])


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (
            np.zeros((8, 3, 8), np.float32),
            r"raised RuntimeError on batch 0 \(samples 0–7; inputs \(8, 3, 8\)\)",
        ),
        (np.zeros((8, 5, 8, 8), np.float32), r"expected input\[8, 5, 8, 8\] to have 3 channels"),
        (np.zeros((0, 3, 8, 8), np.float32), "zero samples"),
        (np.array(3.0, np.float32), "holds a scalar"),
        (np.zeros((4, 3, 8, 8), np.complex64), "raised"),
    ],
    ids=["wrong-rank", "wrong-channels", "zero-samples", "scalar", "complex"],
)
def test_wrong_arrays(small, tmp_path, array, message) -> None:
    p = tmp_path / "c.npy"
    np.save(p, array)
    r = _audit(small["ts"], "--calib", p)
    assert r.exit_code == 2, r.output
    [line] = r.stderr.strip().splitlines()
    assert pytest.importorskip("re").search(message, line), line


def test_integer_data_is_cast_for_float_models(small, tmp_path) -> None:
    p = tmp_path / "c.npy"
    np.save(p, np.ones((4, 3, 8, 8), np.float64))
    assert _audit(small["ts"], "--calib", p).exit_code == 0


def test_wrong_input_names(small, tmp_path) -> None:
    p = tmp_path / "c.npz"
    np.savez(p, image=np.zeros((4, 3, 8, 8), np.float32), extra=np.zeros((4, 2), np.float32))
    r = _audit(small["ts"], "--calib", p)
    assert r.exit_code == 2
    assert "calibration inputs ['extra', 'image'] do not match the model's inputs ['x']" in r.stderr


def test_named_npz_matches(small, tmp_path) -> None:
    p = tmp_path / "c.npz"
    np.savez(p, x=np.load(small["calib"]))
    r = _audit(small["ts"], "--calib", p, "--format", "json")
    assert r.exit_code == 0
    assert json.loads(r.stdout)["sites"][0]["dead_units"] == [0, 2]


def test_nan_and_inf_are_counted_not_hidden(small, tmp_path) -> None:
    x = np.load(small["calib"]).copy()
    x[3, 0, 0, 0] = np.nan  # spreads into a 3x3 neighbourhood of every output channel
    x[5, 1, 4, 4] = np.inf
    p = tmp_path / "c.npy"
    np.save(p, x)
    r = _audit(small["ts"], "--calib", p, "--format", "json")
    assert r.exit_code == 0
    d = json.loads(r.stdout)
    [site] = d["sites"]
    # NaN at a corner pixel reaches 2x2 outputs per channel; Inf at (4, 4) reaches 3x3 per channel.
    assert site["nonfinite_values"] == 4 * (2 * 2) + 4 * (3 * 3)
    assert site["nonfinite_units"] == [0, 1, 2, 3]
    assert site["dead_units"] == [0, 2]  # still dead on every finite element
    assert d["summary"]["nonfinite"] == 52
    assert any("non-finite" in w for w in d["warnings"])
    gate = _audit(small["ts"], "--calib", p, "--fail-on", "nonfinite>0")
    assert gate.exit_code == 1
