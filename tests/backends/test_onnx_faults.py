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


def _loop_reference(x: np.ndarray, trips: int) -> np.ndarray:
    """Pre-activations of the Loop's Relu at every iteration, in float32 like onnxruntime."""
    w = (0.5 * np.eye(x.shape[1])).astype(np.float32)
    h, pre = x, []
    for _ in range(trips):
        m = h @ w
        pre.append(m)
        h = np.maximum(m, 0)
    return np.stack(pre)


def test_loop_statistics_accumulate_over_iterations_and_match_numpy(tmp_path: Path) -> None:
    trips = 200
    model = oh.loop_model(tmp_path / "loop.onnx", trips, width=8)
    x = np.random.default_rng(3).standard_normal((16, 8)).astype(np.float32)
    x[:, 2] = -np.abs(x[:, 2]) - 0.1  # unit 2 never fires
    np.save(tmp_path / "x.npy", x)
    r = CliRunner().invoke(
        cli, ["audit", str(model), "--calib", str(tmp_path / "x.npy"), "--format", "json", "-q"]
    )
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    pre = _loop_reference(x, trips)  # [trips, N, units]
    site = next(s for s in d["sites"] if s["index"] == 0)
    fire = (pre > 0).reshape(-1, 8).mean(axis=0)
    assert site["units"] == 8
    assert site["coverage"]["elements_per_unit"] == trips * 16
    assert site["dead_units"] == [int(i) for i in np.flatnonzero(fire == 0)] and 2 in site["dead_units"]
    assert site["fire_rate"]["mean"] == pytest.approx(fire.mean(), abs=1e-6)
    assert site["pre_activation"]["min"] == pytest.approx(float(pre.min()), rel=1e-5)
    assert site["pre_activation"]["max"] == pytest.approx(float(pre.max()), rel=1e-5)


_PEAK = """
import sys
from actaudit.cli import main
try:
    main(sys.argv[1:])
except SystemExit as e:
    code = e.code
hwm = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:")).split()[1]
print("RC", code, "PEAK_KB", hwm)
"""


def _peak_mb(*args: object) -> float:
    r = subprocess.run(
        [sys.executable, "-c", _PEAK, *map(str, args)], capture_output=True, text=True, timeout=300
    )
    line = r.stdout.strip().splitlines()[-1].split()
    assert line[:2] == ["RC", "0"], r.stdout + r.stderr
    return int(line[3]) / 1024


@pytest.mark.slow
def test_loop_memory_does_not_grow_with_the_trip_count(tmp_path: Path) -> None:
    """Peak RSS of a child: 1,000 vs 20,000 iterations of an 8-unit ReLU (scan outputs grew ~6 KB each)."""
    np.save(tmp_path / "x.npy", np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32))
    peaks = {}
    for trips in (1_000, 20_000):
        model = oh.loop_model(tmp_path / f"loop{trips}.onnx", trips, width=8)
        peaks[trips] = _peak_mb("audit", model, "--calib", tmp_path / "x.npy", "-q")
    print(f"peak RSS: {peaks[1_000]:.0f} MB at 10^3 iterations, {peaks[20_000]:.0f} MB at 2x10^4")
    assert peaks[20_000] - peaks[1_000] < 20
