"""Slopes applied to an eager ``nn.Module`` you keep training: the rewrite's surgery without the search.

:func:`apply_slopes` takes plain per-site values (``actaudit.rewrite.apply`` turns a rewrite
report into them). Sites are named as the audit names them.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from ...edit.slopes import SlopePlan
from ...errors import InputError
from .eager_surgery import rewrite_eager

if TYPE_CHECKING:
    import torch


def apply_slopes(
    module: torch.nn.Module,
    slopes: dict[str, Any],
    to: str = "leaky",
    *,
    units: dict[str, tuple[int, int]] | None = None,
    shifts: dict[str, Any] | None = None,
    ranks: dict[str, int] | None = None,
    strict: bool = True,
    bounds: dict[str, float] | None = None,
    kinds: dict[str, str] | None = None,
) -> torch.nn.Module:
    """A copy of ``module`` with the named ReLU / ReLU6 sites replaced; the input is not modified.

    ``slopes`` maps audit site names (``layer1.0.relu#1``, ``encoder/relu``) to α, or to
    one slope per unit (a sequence: a learnable per-unit PReLU, 0 where the unit keeps
    plain ReLU, as ``report.sites[i].unit_slopes`` describes). ``shifts`` maps sites to
    the constant per unit subtracted after the activation (the exact mean correction
    ``slope·E[min(z, 0)]``). ReLU modules are swapped; a module reused at sites with
    different slopes is split, and functional ``relu`` calls are rewritten, by tracing
    the calling module with ``torch.fx`` (that module becomes a ``GraphModule``).
    ``units`` gives ``(units, unit_axis)`` per site for ``to="prelu"`` with a scalar α;
    ``ranks`` the rank of the site's tensor, batch included (default 2, or 4 for unit
    axis 1 with shifts on images: pass it); ``bounds`` a clamp ``[0, bound]`` per site for learnable
    per-unit slopes (:class:`BoundedUnitPReLU`). Sites that cannot be rewritten raise
    :class:`actaudit.errors.InputError` (``strict``) or are reported in a warning.
    """
    units = units or {}
    shifts = shifts or {}
    ranks = ranks or {}
    bounds = bounds or {}
    kinds = kinds or {}
    plans = []
    for n, a in slopes.items():
        vec = np.asarray(a, dtype=np.float64).reshape(-1) if np.ndim(a) else None
        n_units, axis = (
            (vec.size, units.get(n, (vec.size, 1))[1]) if vec is not None else units.get(n, (1, 1))
        )
        sh = shifts.get(n)
        rank = ranks.get(n, 2)
        plans.append(
            SlopePlan(
                n,
                float(vec.max()) if vec is not None else float(a),
                n_units,
                axis,
                sample_shape=tuple([1] * (rank - 1)),
                neg_mean=None,
                unit_slopes=vec,
                kind=kinds.get(n, "relu"),
                bound=bounds.get(n),
            )
        )
        if sh is not None:
            s_vec = np.asarray(sh, dtype=np.float64).reshape(-1)
            plans[-1].shift_override = s_vec
            plans[-1].exact_shift = True
            plans[-1].units = s_vec.size if vec is None else n_units
    if any(p.unit_slopes is not None for p in plans):
        to = "prelu"  # per-unit slopes are a PReLU whatever ``to`` says
    res = rewrite_eager(module, plans, to)
    if res.skipped:
        text = "; ".join(f"{n}: {why}" for n, why in res.skipped.items())
        if strict:
            raise InputError(f"cannot rewrite {len(res.skipped)} site(s): {text}")
        warnings.warn(f"left as ReLU: {text}", stacklevel=2)
    return res.model


def copy_tensors(module: torch.nn.Module, source: object, paths: list[str]) -> torch.nn.Module:
    """A copy of ``module`` whose modules at ``paths`` hold ``source``'s weight and bias (recycled sites)."""
    import copy

    import torch

    if not isinstance(source, torch.nn.Module) or isinstance(source, torch.jit.ScriptModule):
        raise InputError("the report's recycled tensors are not in an eager model (report.model_out)")
    new = copy.deepcopy(module)
    for path in paths:
        try:
            mine, theirs = new.get_submodule(path), source.get_submodule(path)
        except AttributeError as e:
            raise InputError(f"recycling touched {path!r}, which the module given does not have") from e
        w, b = theirs.weight, theirs.bias
        mine_w, mine_b = mine.weight, mine.bias
        assert isinstance(w, torch.Tensor) and isinstance(mine_w, torch.Tensor)
        with torch.no_grad():
            mine_w.copy_(w)
            if isinstance(b, torch.Tensor):
                if isinstance(mine_b, torch.Tensor):
                    mine_b.copy_(b)
                else:
                    mine.bias = torch.nn.Parameter(b.detach().clone())
    return new
