"""ONNX faults: old opsets are audited, Ctrl-C stops onnxruntime promptly, Loop memory does not grow
with the trip count."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx_hostile as oh
import pytest
from click.testing import CliRunner

from actaudit.cli import cli

ACTAUDIT = [sys.executable, "-m", "actaudit"]


@pytest.mark.parametrize("opset", [7, 8, 9])
def test_old_opsets_are_audited_and_match_numpy(tmp_path: Path, opset: int) -> None:
    model, w, b = oh.linear_relu(tmp_path / f"op{opset}.onnx", opset)
    x = np.random.default_rng(1).standard_normal((40, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    r = CliRunner().invoke(cli, ["audit", str(model), "--calib", str(tmp_path / "x.npy"), "--format", "json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    z = x.astype(np.float64) @ w.astype(np.float64) + b  # numpy oracle, no shared code
    fire = (z > 0).mean(axis=0)
    site = d["sites"][0]
    assert site["dead_units"] == [1, 4] == [int(i) for i in np.flatnonzero(fire == 0)]
    assert site["fire_rate"]["max"] == pytest.approx(fire.max(), abs=1e-6)
    assert site["fire_rate"]["mean"] == pytest.approx(fire.mean(), abs=1e-5)
    assert any(f"opset {opset} was converted in memory to opset 11" in w for w in d["warnings"])
    r = CliRunner().invoke(cli, ["inspect", str(model)])
    assert r.exit_code == 0, r.output


def test_ctrl_c_reaches_onnxruntime_promptly(tmp_path: Path) -> None:
    """A Loop of 2·10⁶ matmuls (~12 min); SIGINT 1 s into the run stops it within seconds with exit 130."""
    model = oh.loop_model(tmp_path / "long.onnx", 2_000_000, width=256, relu_inside=False)
    started = tmp_path / "started"
    loader = tmp_path / "loader.py"
    loader.write_text(
        "import pathlib\nimport numpy as np\n"
        f"def batches():\n    pathlib.Path({str(started)!r}).touch()\n"
        "    yield np.ones((64, 256), np.float32)\n"
    )
    out = tmp_path / "r.json"
    p = subprocess.Popen(
        [*ACTAUDIT, "audit", str(model), "--data-loader", f"{loader}:batches", "-o", str(out), "-q"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not started.exists():
            assert p.poll() is None, p.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(1.0)  # well inside session.run now
        t0 = time.monotonic()
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=30)
        elapsed = time.monotonic() - t0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 130, err
    assert elapsed < 5.0
    assert err.strip().splitlines() == ["actaudit: interrupted; no output was written"]
    assert not out.exists()
    assert [f.name for f in tmp_path.iterdir() if f.name.startswith(".")] == []
