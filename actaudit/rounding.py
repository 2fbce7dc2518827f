"""Floats rounded for a stable JSON: float sums differ in the last bits between thread counts and CPUs."""

from __future__ import annotations

import math


def json_float(x: float | None, digits: int = 6) -> float | None:
    """``x`` to ``digits`` significant digits; ``None`` for ``None``, NaN and infinities (JSON has none)."""
    if x is None or not math.isfinite(x):
        return None
    return float(f"{x:.{digits}g}")
