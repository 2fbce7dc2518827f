"""``actaudit.rewrite.apply(module, report)``: a rewrite report turned into the torch backend's per-site values."""

from __future__ import annotations

import copy
from typing import Any, cast

import numpy as np

from .report import RewriteReport, SiteRewrite


def apply_report(module: Any, report: RewriteReport, *, strict: bool = True) -> Any:
    """Per-unit slopes with their shifts (and bounds) from ``report``; recycled tensors from its ``model_out``."""
    from ..backends.torch.apply import apply_slopes

    o = report.options
    slopes: dict[str, object] = {}
    shifts: dict[str, object] = {}
    units: dict[str, tuple[int, int]] = {}
    ranks: dict[str, int] = {}
    kinds: dict[str, str] = {}
    recycled = [s for s in report.rewritten if s.recycled]
    for s in report.rewritten:
        if s.alpha is None:
            continue
        slopes[s.name] = _slopes(s, o)
        units[s.name] = (s.units, s.unit_axis)
        ranks[s.name] = s.rank or 2
        kinds[s.name] = "relu6" if s.op.lower() in ("relu6", "hardtanh", "clip") else "relu"
        if s.unit_shifts:
            vec = np.zeros(s.units)
            for u, v in s.unit_shifts.items():
                vec[int(u)] = v
            shifts[s.name] = vec
    base = _recycled_copy(module, report, recycled) if recycled else module
    if not slopes:
        return base if recycled else copy.deepcopy(module)
    to = "leaky" if o.get("to") == "leaky" else "prelu"
    bound = float(cast(list[float], o["alpha_range"])[1]) if o.get("mode") == "learnable" else None
    return apply_slopes(
        base,
        slopes,
        to,
        units=units,
        shifts=shifts,
        ranks=ranks,
        strict=strict,
        kinds=kinds,
        bounds={n: bound for n in slopes} if bound is not None else None,
    )


def _slopes(s: SiteRewrite, o: dict[str, object]) -> Any:
    """One α (``--to leaky``) or a slope per unit: the chosen units' slopes, 0 (plain ReLU) elsewhere."""
    assert s.alpha is not None
    if o.get("to") == "leaky" and not s.recycled:
        return float(s.alpha)
    vec = np.zeros(s.units)
    if s.unit_slopes:
        for u, a in s.unit_slopes.items():
            vec[int(u)] = a
    else:
        vec[:] = s.alpha
    return vec


def _recycled_copy(module: Any, report: RewriteReport, sites: list[SiteRewrite]) -> Any:
    from ..backends.torch.apply import copy_tensors

    paths = [str(p) for s in sites if s.recycled for p in (s.recycled["producer"], s.recycled["consumer"])]
    return copy_tensors(module, report.model_out, paths)
