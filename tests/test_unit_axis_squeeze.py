"""A size-1 unit axis followed through Squeeze / Reshape: a Conv with one output channel, squeezed,
then a sigmoid head is one unit in every format, not one unit per time step.

Oracle: the head's pre-activation read with a forward hook on the eager model (no capture code);
the per-unit statistics of a one-unit site are those of the whole tensor.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import actaudit
from actaudit import unitaxis as ua


class _Head(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(3, 4, 3, padding=1)
        self.out = nn.Conv1d(4, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.out(torch.relu(self.conv(x))).squeeze(1))


@pytest.mark.parametrize("fmt", ["eager", "script", "onnx"])
def test_squeezed_single_channel_head_is_one_unit(tmp_path: Path, fmt: str) -> None:
    torch.manual_seed(0)
    m = _Head().eval()
    with torch.no_grad():
        m.out.bias.fill_(12.0)  # a saturated head: one saturated unit, not 62 time steps
    x = np.random.RandomState(0).randn(8, 3, 62).astype(np.float32)
    model: object = m
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based ONNX exporter is deprecated, and warns
        if fmt == "script":
            model = str(tmp_path / "head.ts")
            torch.jit.trace(m, torch.from_numpy(x[:2])).save(model)
        elif fmt == "onnx":
            model = str(tmp_path / "head.onnx")
            torch.onnx.export(
                m,
                (torch.from_numpy(x[:2]),),
                model,
                dynamo=False,
                input_names=["x"],
                dynamic_axes={"x": {0: "n", 2: "t"}},
            )
    report = actaudit.audit(model, x, trust_code=True)
    head = report.sites[-1]
    assert (head.info.kind, head.info.units, head.info.unit_axis_source) == ("sigmoid", 1, ua.WHOLE)
    assert not any("guessed" in w for w in report.warnings)
    seen: list[torch.Tensor] = []
    hook = m.out.register_forward_hook(lambda mod, a, o: seen.append(o))
    with torch.no_grad():
        m(torch.from_numpy(x))
    hook.remove()
    z = seen[0].numpy()
    np.testing.assert_allclose(head.stats.min, [z.min()], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(head.stats.max, [z.max()], rtol=1e-5, atol=1e-5)
    assert head.stats.elements == z.size and head.saturated_units == [0]


def test_squeeze_rules() -> None:
    conv = ua.produced(ua.CONV, 3)
    assert conv is not None
    one = ua.remove_axes(conv, [1], 3, squeeze=True)
    assert one is not None and one.whole
    assert ua.remove_axes(conv, [1], 3) is None  # a reduction over the unit axis loses it
    assert ua.reshape(conv, (None, 1, 62), (None, 62)) == one
    assert ua.reshape(conv, (None, 4, 62), (None, 248)) is None
    assert ua.resolve(ua.elementwise(one, 2, 2), 2) == (None, ua.WHOLE)
    assert ua.resolve(ua.permute(one, [0, 1]), 2) == (None, ua.WHOLE)


class _Gate(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(x)  # no producer: the axis of a [N, T] input is guessed (last)


def test_changing_guessed_axis_is_named_as_a_wrong_axis() -> None:
    rng = np.random.RandomState(1)
    batches = [rng.randn(4, 5).astype(np.float32), rng.randn(4, 7).astype(np.float32)]
    report = actaudit.audit(_Gate(), batches)
    [u] = report.uncovered
    assert "guessed unit axis is not a unit axis" in u.reason and "--unit-axis" in u.reason
    # with data whose axis keeps its size, the same site is audited over every batch
    fixed = actaudit.audit(_Gate(), [b[:, :5] for b in batches], unit_axis=["*=1"])
    assert fixed.uncovered == [] and fixed.sites[0].stats.samples == 8
