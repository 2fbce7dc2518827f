"""Faults mid-run: a raising model, running out of memory, Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn as nn
from click.testing import CliRunner

from actaudit.cli import cli


class OOMOnBigBatches(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.fc(x))
        if x.shape[0] > 4:
            raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return y


def test_out_of_memory_suggests_batch_size(tmp_path) -> None:
    torch.jit.save(torch.jit.script(OOMOnBigBatches()), str(tmp_path / "m.ts"))
    np.save(tmp_path / "x.npy", np.zeros((16, 3), np.float32))
    r = CliRunner().invoke(cli, ["audit", str(tmp_path / "m.ts"), "--calib", str(tmp_path / "x.npy")])
    assert r.exit_code == 2
    assert "ran out of memory on batch 0" in r.stderr and "lower --batch-size" in r.stderr
    ok = CliRunner().invoke(
        cli, ["audit", str(tmp_path / "m.ts"), "--calib", str(tmp_path / "x.npy"), "--batch-size", "4"]
    )
    assert ok.exit_code == 0


SLOW_LOADER = """
import os
import time
import numpy as np

def batches():
    for i in range(200):
        if i == 3:  # the audit is under way: tell the test it may interrupt now
            open(os.environ["ACTAUDIT_TEST_STARTED"], "w").close()
        time.sleep(0.05)
        yield np.zeros((2, 3, 8, 8), dtype=np.float32)
"""


def _wait_for(path, p, limit: float = 120.0) -> None:
    """Wait until the audit has drawn a few batches (start-up time varies with the machine's load)."""
    deadline = time.monotonic() + limit
    while not path.exists():
        assert p.poll() is None, p.communicate()
        assert time.monotonic() < deadline, "the audit never started drawing batches"
        time.sleep(0.05)


def test_ctrl_c_exits_130_and_leaves_nothing(small, tmp_path, tmp_path_factory) -> None:
    started = tmp_path_factory.mktemp("signal") / "started"
    loader = tmp_path / "slow.py"
    loader.write_text(SLOW_LOADER)
    out = tmp_path / "report.json"
    before = small["ts"].read_bytes()
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "actaudit",
            "audit",
            str(small["ts"]),
            "--data-loader",
            f"{loader}:batches",
            "-o",
            str(out),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "ACTAUDIT_TEST_STARTED": str(started)},
    )
    _wait_for(started, p)
    assert p.poll() is None, p.communicate()
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert sorted(os.listdir(tmp_path)) == ["slow.py"]
    assert small["ts"].read_bytes() == before
