"""Input boxes: one per model input, from ``--input-range`` or from the calibration data's own range."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError


@dataclass
class InputRange:
    key: str  # "0", "1", … for positional inputs, the name for keyword inputs
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    low: float
    high: float


def parse_input_ranges(
    specs: list[str] | tuple[str, ...], names: list[str]
) -> dict[str, tuple[float, float]]:
    """``LOW,HIGH`` (every input) or ``NAME=LOW,HIGH`` (one input) -> {input name: (low, high)}."""
    out: dict[str, tuple[float, float]] = {}
    for spec in specs:
        name, sep, rest = spec.rpartition("=")
        text = rest if sep else spec
        try:
            lo, hi = (float(x) for x in text.split(","))
        except ValueError:
            raise InputError(
                f"--input-range {spec!r} is not [NAME=]LOW,HIGH (e.g. 0,1 or image=-1,1)"
            ) from None
        if math.isnan(lo) or math.isnan(hi) or lo > hi:
            raise InputError(f"--input-range {spec!r}: need LOW <= HIGH")
        if sep:
            if name not in names:
                raise InputError(
                    f"--input-range {spec!r}: the model has no input {name!r}",
                    hint=f"its inputs are {', '.join(names)}",
                )
            out[name] = (lo, hi)
        else:
            for n in names:
                out.setdefault(n, (lo, hi))
    return out
