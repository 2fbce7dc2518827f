"""How values enter the JSON forms of the results: rounded floats, the schema header, plain fields."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import cast

from ._version import __version__

JSON = dict[str, object]  # a JSON object as the reports write it and their readers take it back


def member(d: Mapping[str, object], key: str) -> JSON:
    """``d[key]``, a JSON object (a report's section: ``summary``, ``model``, a site's ``coverage``)."""
    return cast(JSON, d[key])


def members(d: Mapping[str, object], key: str) -> list[JSON]:
    """``d[key]``, a list of JSON objects (a report's ``sites``, ``gates``, ``uncovered``)."""
    return cast(list[JSON], d[key])


def number(d: Mapping[str, object], key: str) -> float:
    """``d[key]``, a number the report wrote (an int or a float)."""
    return cast(float, d[key])


def unit_list(d: Mapping[str, object], key: str) -> list[int]:
    """``d[key]``, a list of unit indices (``dead_units``, ``saturated_units``...)."""
    return cast(list[int], d[key])


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
