"""How values enter the JSON forms of the results: rounded floats, the schema header, plain fields."""

from __future__ import annotations

import math

from ._version import __version__


def json_float(x: float | None, digits: int = 6) -> float | None:
    """``x`` to ``digits`` significant digits; ``None`` for ``None``, NaN and infinities (JSON has none).

    Float sums differ in the last bits between thread counts and CPUs; six digits keep the JSON stable.
    """
    if x is None or not math.isfinite(x):
        return None
    return float(f"{x:.{digits}g}")


def envelope(schema: str) -> dict[str, object]:
    """The first two keys of every result's JSON: its schema and the tool that wrote it."""
    return {"schema": schema, "tool": {"name": "actaudit", "version": __version__}}


def picked(obj: object, *names: str) -> dict[str, object]:
    """``{name: obj.name}`` for ``names``, in that order; lists are copied, so the dict is the caller's."""
    return {n: list(v) if isinstance(v := getattr(obj, n), list) else v for n in names}


def dicts(obj: object, *names: str) -> dict[str, object]:
    """``{name: obj.name.to_dict()}`` for ``names``, ``None`` where the attribute is ``None``."""
    return {n: None if (v := getattr(obj, n)) is None else v.to_dict() for n in names}
