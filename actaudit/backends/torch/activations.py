"""The modules and graph constants that replace a ReLU: per-unit PReLU, shifted LeakyReLU, classic forms."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...edit.slopes import SlopePlan, float32_up, unit_shape

LEAKY = "leaky"
PRELU = "prelu"
TARGETS = (LEAKY, PRELU)


class AxisPReLU(nn.Module):
    """PReLU with one learnable slope per unit along any axis (``nn.PReLU`` uses axis 1 only)."""

    def __init__(self, units: int, axis: int, init: float | torch.Tensor = 0.25) -> None:
        super().__init__()
        self.axis = int(axis)
        w = (
            torch.full((units,), float(init))
            if not isinstance(init, torch.Tensor)
            else init.detach().clone().float()
        )
        self.weight = nn.Parameter(w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = [1] * x.dim()
        shape[self.axis] = -1
        return torch.where(x >= 0, x, x * self.weight.view(shape))

    def extra_repr(self) -> str:
        return f"units={self.weight.numel()}, axis={self.axis}"


class UnitPReLU(nn.Module):
    """ReLU/ReLU6 with a learnable slope per unit below zero, then a constant per unit subtracted.

    ``y = prelu(x, weight)`` (capped at ``cap`` for ReLU6), minus ``shift`` (a buffer shaped to
    broadcast on the unit axis): the exact mean correction ``slope·E[min(z, 0)]``. Units
    with slope 0 behave as the original ReLU. Scriptable and exportable; the slope is
    ``aten::prelu``'s weight, so any runtime reads it back.
    """

    def __init__(
        self, slopes: np.ndarray, shift: np.ndarray, axis: int, rank: int, cap: float | None = None
    ) -> None:
        super().__init__()
        w = torch.as_tensor(np.asarray(slopes), dtype=torch.float32).reshape(-1)
        self.weight = nn.Parameter(w.clone())
        units = int(w.numel())
        ax = axis if axis >= 0 else rank + axis
        self.axis = int(ax) if units > 1 else 1
        shape = unit_shape(units, self.axis, rank) if units > 1 else [1]
        self.shift: torch.Tensor
        self.register_buffer("shift", torch.as_tensor(np.asarray(shift), dtype=torch.float32).reshape(shape))
        self.capped = cap is not None
        self.cap = float(cap) if cap is not None else 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        moved = self.axis != 1 and x.dim() > 1
        if moved:
            x = x.movedim(self.axis, 1)
        y = torch.prelu(x, self.slope())
        if self.capped:
            y = torch.clamp_max(y, self.cap)
        if moved:
            y = y.movedim(1, self.axis)
        return y - self.shift

    def slope(self) -> torch.Tensor:
        return self.weight

    def extra_repr(self) -> str:
        return f"units={self.weight.numel()}, axis={self.axis}, cap={self.cap if self.capped else None}"


class BoundedUnitPReLU(UnitPReLU):
    """:class:`UnitPReLU` whose learnable slopes are clamped to ``[0, bound]`` in the forward.

    An unbounded PReLU slope takes steps proportional to ``|z|`` of its unit's negative inputs: far
    below zero (a dead unit) one SGD step can throw it past 1 and the next ones to NaN. Clamped,
    a slope stays a leaky ReLU's slope whatever the optimiser does; ``weight`` stays the parameter.
    """

    def __init__(
        self,
        slopes: np.ndarray,
        shift: np.ndarray,
        axis: int,
        rank: int,
        cap: float | None = None,
        bound: float = 0.3,
    ) -> None:
        super().__init__(slopes, shift, axis, rank, cap)
        self.bound = float(bound)

    def slope(self) -> torch.Tensor:
        return torch.clamp(self.weight, 0.0, self.bound)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", bound={self.bound:g}"


class ShiftedLeakyReLU(nn.Module):
    """LeakyReLU(α) (capped for ReLU6) minus a constant per unit: one α per site, the mean kept."""

    def __init__(
        self, alpha: float, shift: np.ndarray, axis: int, rank: int, cap: float | None = None
    ) -> None:
        super().__init__()
        self.negative_slope = float(alpha)
        sh = np.asarray(shift).reshape(-1)
        shape = unit_shape(sh.size, axis, rank) if sh.size > 1 else [1]
        self.shift: torch.Tensor
        self.register_buffer("shift", torch.as_tensor(sh, dtype=torch.float32).reshape(shape))
        self.capped = cap is not None
        self.cap = float(cap) if cap is not None else 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.leaky_relu(x, self.negative_slope)
        if self.capped:
            y = torch.clamp_max(y, self.cap)
        return y - self.shift


def _plan_rank(p: SlopePlan) -> int:
    return len(p.sample_shape) + 1 if p.sample_shape else 2


def _activation_for(p: SlopePlan, to: str, alpha: float, inplace: bool) -> nn.Module:
    """The module that replaces site ``p``: the per-unit / shifted / capped forms, else the classic ones."""
    if p.per_unit() or p.exact_shift or p.cap is not None:
        if to == LEAKY:
            return ShiftedLeakyReLU(alpha, p.shift_for(np.array([alpha])), p.unit_axis, _plan_rank(p), p.cap)
        slopes = float32_up(p.slopes() if p.unit_slopes is not None else p.slopes(alpha))
        if p.bound is not None:
            return BoundedUnitPReLU(slopes, p.shift_for(slopes), p.unit_axis, _plan_rank(p), p.cap, p.bound)
        return UnitPReLU(slopes, p.shift_for(slopes), p.unit_axis, _plan_rank(p), p.cap)
    return make_activation(
        to, alpha, units=p.units, unit_axis=p.unit_axis, inplace=inplace, init=p.slopes(alpha)
    )


def _is_relu_module(mod: nn.Module) -> bool:
    """nn.ReLU, or a ReLU6 / Hardtanh(0, 6) (rewritten with its cap kept)."""
    if isinstance(mod, nn.ReLU):
        return True
    return isinstance(mod, nn.Hardtanh) and float(mod.min_val) == 0.0 and float(mod.max_val) == 6.0


def make_activation(
    to: str,
    alpha: float,
    *,
    units: int = 1,
    unit_axis: int = 1,
    inplace: bool = False,
    init: np.ndarray | None = None,
) -> nn.Module:
    """LeakyReLU(α), or a PReLU with one slope per unit (``init`` per unit, else α everywhere)."""
    if to == LEAKY:
        return nn.LeakyReLU(float(alpha), inplace=inplace)
    if to == PRELU:
        if init is not None and units > 1:
            w = torch.as_tensor(np.asarray(init), dtype=torch.float32)
            if unit_axis == 1:
                mod = nn.PReLU(num_parameters=units)
                with torch.no_grad():
                    mod.weight.copy_(w)
                return mod
            return AxisPReLU(units, unit_axis, w)
        if unit_axis == 1 or units == 1:
            return nn.PReLU(num_parameters=units, init=float(alpha))
        return AxisPReLU(units, unit_axis, float(alpha))
    raise ValueError(f"unknown target activation {to!r}; use one of {TARGETS}")


def _ints(x: Any) -> list[Any]:
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _any(x: Any) -> Any:
    return x
