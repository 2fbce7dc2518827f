"""Shared small files for the reliability tests: a TorchScript CNN with two dead channels and its data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(4, 3)
        with torch.no_grad():
            self.conv.bias[[0, 2]] = -1e3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.relu(self.conv(x)).mean((2, 3)))


@pytest.fixture(scope="session")
def small(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("reliability")
    torch.manual_seed(0)
    m = SmallCNN().eval()
    torch.jit.save(torch.jit.script(m), str(d / "cnn.ts"))
    torch.save(m.state_dict(), d / "cnn_sd.pt")
    batch = torch.export.Dim("batch", min=1)
    ex = torch.randn(2, 3, 8, 8)
    torch.export.save(torch.export.export(m, (ex,), dynamic_shapes={"x": {0: batch}}), str(d / "cnn.pt2"))
    np.save(d / "x.npy", np.random.default_rng(0).standard_normal((24, 3, 8, 8)).astype(np.float32))
    return {"dir": d, "ts": d / "cnn.ts", "sd": d / "cnn_sd.pt", "pt2": d / "cnn.pt2", "calib": d / "x.npy"}
