"""Empty calibration data of every kind is an error (never a passing audit of nothing), and no output
path may be an input or another output."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from actaudit.cli import cli


def _run(*args: object):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _err(r) -> str:
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("actaudit: error: "), r.output
    return lines[0]


def _empty_pt(d: Path) -> Path:
    p = d / "empty_batch.pt"
    torch.save([torch.zeros(0, 3, 8, 8)], p)
    return p


def _empty_npz(d: Path) -> Path:
    p = d / "empty.npz"
    np.savez_compressed(p, x=np.zeros((0, 3, 8, 8), np.float32))
    return p


def _empty_loader(d: Path) -> str:
    p = d / "loader.py"
    p.write_text("def batches():\n    return iter(())\n")
    return f"{p}:batches"


def _empty_loader_batch(d: Path) -> str:
    p = d / "loader0.py"
    p.write_text("import numpy as np\ndef batches():\n    yield np.zeros((0, 3, 8, 8), np.float32)\n")
    return f"{p}:batches"


@pytest.mark.parametrize(
    ("kind", "make", "message"),
    [
        ("calib", _empty_pt, "holds 1 batch(es) with 0 samples"),
        ("calib", _empty_npz, "zero samples"),
        ("data-loader", _empty_loader, "yielded no batches"),
        ("data-loader", _empty_loader_batch, "gave 0 samples"),
    ],
)
def test_empty_calibration_data_is_exit_2_even_with_a_gate(small, tmp_path, kind, make, message) -> None:
    r = _run("audit", small["ts"], f"--{kind}", make(tmp_path), "--fail-on", "dead>0")
    assert r.exit_code == 2, r.output
    assert message in _err(r)


def test_empty_npy_is_exit_2(small, tmp_path) -> None:
    p = tmp_path / "e.npy"
    np.save(p, np.zeros((0, 3, 8, 8), np.float32))
    r = _run("audit", small["ts"], "--calib", p)
    assert r.exit_code == 2
    _err(r)


def _digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_rewrite_report_cannot_overwrite_the_calibration_file_or_the_model(small, tmp_path) -> None:
    calib = tmp_path / "x.npy"
    calib.write_bytes(small["calib"].read_bytes())
    before = _digest(calib)
    out = tmp_path / "out.ts"
    r = _run("rewrite", small["ts"], "-o", out, "--calib", calib, "--report", calib)
    assert r.exit_code == 2
    assert "--report" in _err(r) and "--calib input" in _err(r)
    assert _digest(calib) == before
    r = _run("rewrite", small["ts"], "-o", out, "--calib", calib, "--report", out)
    assert r.exit_code == 2
    assert "are the same file" in _err(r)
    assert not out.exists()


def test_audit_outputs_that_collide_are_refused(small, tmp_path) -> None:
    calib = tmp_path / "x.npy"
    calib.write_bytes(small["calib"].read_bytes())
    link = tmp_path / "link.npy"
    os.symlink(calib, link)
    hard = tmp_path / "hard.npy"
    os.link(calib, hard)
    before = _digest(calib)
    cases = [
        (["-o", tmp_path / "r.json", "--html", tmp_path / "r.json"], "are the same file"),
        (["--html", calib, "--force"], "--calib input"),
        (["-o", hard, "--force"], "--calib input"),  # a hard link to an input is that input
        (["-o", link, "--force"], "is a symbolic link"),  # and a symbolic link is never replaced
    ]
    for extra, message in cases:
        r = _run("audit", small["ts"], "--calib", calib, *extra)
        assert r.exit_code == 2, r.output
        assert message in _err(r)
    assert _digest(calib) == before
    assert not (tmp_path / "r.json").exists()
