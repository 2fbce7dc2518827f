"""The PyTorch walkers of the bias fold: eager, TorchScript and torch.export reach the same decision."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from actaudit.backends.torch.eager_surgery import rewrite_eager
from actaudit.backends.torch.export_surgery import rewrite_export
from actaudit.backends.torch.script_surgery import rewrite_torchscript
from actaudit.edit.slopes import SlopePlan


class ViewNet(nn.Module):
    """conv → relu → view(N, -1) → linear; ``forward``'s module argument is not called ``self``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 1)
        self.fc = nn.Linear(4 * 3 * 3, 5)

    def forward(this, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(this.conv(x))
        return this.fc(y.view(y.size(0), -1))


NEG_MEAN = np.array([-0.5, -1.0, 0.0, -2.0])


def _variants(model: nn.Module) -> dict[str, object]:
    x = torch.randn(2, 2, 3, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "eager": model,
            "torchscript": torch.jit.script(model),
            "export": torch.export.export(model, (x,)),
        }


@pytest.mark.parametrize("fmt", ["eager", "torchscript", "export"])
def test_fold_through_a_view_into_the_linear(fmt: str) -> None:
    torch.manual_seed(0)
    model = ViewNet().eval()
    plan = SlopePlan(name="relu", alpha=0.1, units=4, unit_axis=1, sample_shape=(4, 3, 3), neg_mean=NEG_MEAN)
    m = _variants(model)[fmt]
    rewrite = {"eager": rewrite_eager, "torchscript": rewrite_torchscript, "export": rewrite_export}[fmt]
    res = rewrite(m, [plan], "leaky", compensate=True)  # type: ignore[operator]
    assert "relu" in res.rewritten and "relu" in res.compensated, res.not_compensated
    assert "approximate" not in res.compensated["relu"]
    # expected: the Linear's output moves by fc(s) − fc(0) for the input s = 0.1·E[min(z, 0)] per channel
    s = torch.tensor(0.1 * NEG_MEAN, dtype=torch.float32).view(1, 4, 1, 1).expand(1, 4, 3, 3).reshape(1, -1)
    with torch.no_grad():
        move = (model.fc(s) - model.fc(torch.zeros_like(s)))[0]
        want = model.fc.bias - move
    new = res.model
    got = new.state_dict["fc.bias"] if fmt == "export" else new.fc.bias  # type: ignore[attr-defined]
    torch.testing.assert_close(got.detach(), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fmt", ["eager", "torchscript", "export"])
def test_residual_add_is_refused_in_every_format(fmt: str) -> None:
    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 1)
            self.act = nn.ReLU()
            self.out = nn.Conv2d(2, 2, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(self.act(self.conv(x)) + x)

    plan = SlopePlan(
        name="act", alpha=0.1, units=2, unit_axis=1, sample_shape=(2, 3, 3), neg_mean=NEG_MEAN[:2]
    )
    m = _variants(Residual().eval())[fmt]
    rewrite = {"eager": rewrite_eager, "torchscript": rewrite_torchscript, "export": rewrite_export}[fmt]
    res = rewrite(m, [plan], "leaky", compensate=True)  # type: ignore[operator]
    assert "act" in res.rewritten and "act" not in res.compensated
    assert res.not_compensated["act"].startswith("the next op is") and "add" in res.not_compensated["act"]
