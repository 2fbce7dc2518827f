"""The published JSON Schema of the report (``actaudit/report.schema.json``, draft 2020-12).

:func:`validate` uses the ``jsonschema`` package when it is installed. Without it, a
small built-in checker covers the keywords this one schema uses, so a report can be
checked anywhere actaudit runs; it is not a general JSON Schema validator.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable
from functools import cache
from importlib import resources
from typing import Any, cast

from ..errors import InputError

SCHEMA_FILE = "report.schema.json"
_IGNORED = frozenset({"$schema", "$id", "$defs", "title", "description"})


class ReportSchemaError(InputError):
    """A report does not match the schema; ``errors`` lists every violation found."""

    def __init__(self, errors: list[str]) -> None:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(f"the report does not match {SCHEMA_FILE}: {errors[0]}{more}")
        self.errors = errors


@cache
def _schema_text() -> str:
    return resources.files("actaudit").joinpath(SCHEMA_FILE).read_text(encoding="utf-8")


def load_schema() -> dict[str, Any]:
    """A fresh copy of the schema as a dict."""
    schema: dict[str, Any] = json.loads(_schema_text())
    return schema


def errors(report: object) -> list[str]:
    """Every violation, as ``'<json path>: <message>'``; empty when ``report`` is valid."""
    schema = load_schema()
    try:
        import jsonschema
    except ImportError:
        return _Checker(schema).check(report, schema, "$")
    validator = jsonschema.Draft202012Validator(schema)
    found = sorted(validator.iter_errors(report), key=lambda e: list(map(str, e.absolute_path)))
    return [f"{_path(e.absolute_path)}: {e.message}" for e in found]


def validate(report: object) -> None:
    """Raise :class:`ReportSchemaError` unless ``report`` (a ``Report.to_dict()``) matches the schema."""
    found = errors(report)
    if found:
        raise ReportSchemaError(found)


def _path(parts: Iterable[str | int]) -> str:
    out = "$"
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else f".{p}"
    return out


_TYPES: dict[str, Callable[[object], bool]] = {
    "object": lambda x: isinstance(x, dict),
    "array": lambda x: isinstance(x, list),
    "string": lambda x: isinstance(x, str),
    "boolean": lambda x: isinstance(x, bool),
    "null": lambda x: x is None,
    "integer": lambda x: (
        (isinstance(x, int) and not isinstance(x, bool))
        or (isinstance(x, float) and math.isfinite(x) and x.is_integer())
    ),
    "number": lambda x: isinstance(x, (int, float)) and not isinstance(x, bool),
}


class _Checker:
    """The subset of draft 2020-12 that ``report.schema.json`` uses, and nothing more."""

    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root

    def _resolve(self, ref: str) -> dict[str, Any]:
        if not ref.startswith("#/"):
            raise ValueError(f"only local $ref are supported, got {ref!r}")
        node: Any = self.root
        for part in ref[2:].split("/"):
            node = node[part]
        return node

    def check(self, x: object, s: dict[str, Any], at: str) -> list[str]:
        out: list[str] = []
        for key, want in s.items():
            if key in _IGNORED or key in ("properties", "additionalProperties"):
                continue
            if key == "$ref":
                out += self.check(x, self._resolve(want), at)
            elif key == "type":
                kinds = [want] if isinstance(want, str) else want
                if not any(_TYPES[k](x) for k in kinds):
                    return [f"{at}: {x!r:.60} is not of type {' or '.join(map(repr, kinds))}"]
            elif key == "const":
                if x != want or isinstance(x, bool) != isinstance(want, bool):
                    out.append(f"{at}: {want!r} was expected")
            elif key == "enum":
                if x not in want:
                    out.append(f"{at}: {x!r:.60} is not one of {want!r}")
            elif key == "anyOf":
                if all(self.check(x, sub, at) for sub in want):
                    out.append(f"{at}: {x!r:.60} matches none of the allowed forms")
            elif key == "required":
                if isinstance(x, dict):
                    out += [f"{at}: {k!r} is a required property" for k in want if k not in x]
            elif key == "items":
                if isinstance(x, list):
                    for i, item in enumerate(x):
                        out += self.check(item, want, f"{at}[{i}]")
            elif key == "uniqueItems":
                if want and isinstance(x, list) and len({json.dumps(i, sort_keys=True) for i in x}) != len(x):
                    out.append(f"{at}: has non-unique elements")
            elif key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
                if _TYPES["number"](x) and not _in_bound(key, cast(float, x), want):  # a number, just checked
                    out.append(f"{at}: {x!r} violates {key} {want!r}")
            elif key == "pattern":
                if isinstance(x, str) and not re.search(want, x):
                    out.append(f"{at}: {x!r:.60} does not match {want!r}")
            elif key == "minLength":
                if isinstance(x, str) and len(x) < want:
                    out.append(f"{at}: {x!r} is shorter than {want}")
            else:
                raise ValueError(f"the built-in checker does not know the keyword {key!r}")
        if isinstance(x, dict):
            props = s.get("properties", {})
            extra = s.get("additionalProperties", True)
            for k, v in x.items():
                if k in props:
                    out += self.check(v, props[k], f"{at}.{k}")
                elif extra is False:
                    out.append(f"{at}: additional property {k!r} is not allowed")
                elif isinstance(extra, dict):
                    out += self.check(v, extra, f"{at}.{k}")
        return out


def _in_bound(key: str, x: float, bound: float) -> bool:
    if key == "minimum":
        return x >= bound
    if key == "maximum":
        return x <= bound
    if key == "exclusiveMinimum":
        return x > bound
    return x < bound
