"""A shard report's shape, types, lengths and ranges, checked before ``merge`` sizes anything with them.

A shard report is a file someone hands in: its unit counts size the per-unit arrays, its shard
count sizes the list of missing shards, its counters become rates. Every field ``merge``
reads is checked here first, and the first problem is one :class:`InputError` naming the file
and the JSON path (``counters.sites[3].low[7]``). Nothing here allocates more than the
file's own values.
"""

from __future__ import annotations

import math
from typing import cast

from .errors import InputError
from .kinds import BOUNDED, CAPPED, RECTIFIERS
from .stats import INT_FIELDS, VECTOR_FIELDS
from .verdicts import Settings

MAX_UNITS = 1 << 31  # units of one site: an element count that no real layer reaches
MAX_COUNT = 1 << 62  # elements, samples, counters: well inside int64
MAX_SHARDS = 1 << 20
MAX_RANK = 64
_NONFINITE = ("inf", "-inf", "nan")
_STUCK = "stuck_fraction"


class Bad(Exception):
    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}")


def _kind(v: object) -> str:
    return "null" if v is None else type(v).__name__


def check_object(v: object, where: str) -> dict[str, object]:
    if not isinstance(v, dict):
        raise Bad(where, f"expected an object, found {_kind(v)}")
    return v


def _key(d: dict[str, object], key: str, where: str) -> object:
    if key not in d:
        raise Bad(f"{where}.{key}" if where else key, "missing")
    return d[key]


def check_str(v: object, where: str) -> str:
    if not isinstance(v, str):
        raise Bad(where, f"expected a string, found {_kind(v)}")
    return v


def _bool(v: object, where: str) -> bool:
    if not isinstance(v, bool):
        raise Bad(where, f"expected true or false, found {_kind(v)}")
    return v


def check_int(v: object, where: str, lo: int = 0, hi: int = MAX_COUNT) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise Bad(where, f"expected an integer, found {_kind(v)}")
    if not lo <= v <= hi:
        shown = str(v) if abs(v) < 10**30 else f"an integer of {len(str(abs(v)))} digits"
        raise Bad(where, f"{shown} is outside [{lo}, {hi}]")
    return v


def check_number(v: object, where: str, lo: float = -math.inf, hi: float = math.inf) -> float:
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        raise Bad(where, f"expected a number, found {_kind(v)}")
    x = float(v)
    if not (math.isfinite(x) and lo <= x <= hi):
        raise Bad(where, f"{v!r} is outside [{lo:g}, {hi:g}]")
    return x


def check_list(v: object, where: str, length: int | None = None) -> list[object]:
    if not isinstance(v, list):
        raise Bad(where, f"expected a list, found {_kind(v)}")
    if length is not None and len(v) != length:
        raise Bad(where, f"has {len(v)} entries, expected {length}")
    return v


def _strings(v: object, where: str) -> None:
    for i, x in enumerate(check_list(v, where)):
        check_str(x, f"{where}[{i}]")


def _settings(v: object) -> None:
    d = check_object(v, "settings")
    names = set(Settings().to_dict())
    for k in d:
        if k not in names:
            raise Bad(f"settings.{k}", "is not a setting of this actaudit")
    for k in sorted(names):
        x = check_number(_key(d, k, "settings"), f"settings.{k}", 0.0, 1.0)
        if k == _STUCK and not 0 < x < 1:
            raise Bad(f"settings.{k}", f"{x!r} is not in (0, 1)")


def _top(d: dict[str, object]) -> None:
    model = check_object(_key(d, "model", ""), "model")
    for k in ("path", "format", "sha256"):
        check_str(_key(model, k, "model"), f"model.{k}")
    _settings(_key(d, "settings", ""))
    cal = check_object(_key(d, "calibration", ""), "calibration")
    check_str(_key(cal, "source", "calibration"), "calibration.source")
    check_int(_key(cal, "batch_size", "calibration"), "calibration.batch_size", 1)
    _bool(_key(cal, "synthetic", "calibration"), "calibration.synthetic")
    if "seed" in cal:
        check_int(cal["seed"], "calibration.seed", -MAX_COUNT)
    for i, inp in enumerate(check_list(_key(d, "inputs", ""), "inputs")):
        check_str(_key(check_object(inp, f"inputs[{i}]"), "name", f"inputs[{i}]"), f"inputs[{i}].name")
    for i, u in enumerate(check_list(_key(d, "uncovered", ""), "uncovered")):
        u = check_object(u, f"uncovered[{i}]")
        for k in ("name", "op", "reason"):
            check_str(_key(u, k, f"uncovered[{i}]"), f"uncovered[{i}].{k}")


def _counters_top(c: dict[str, object]) -> None:
    shard = check_object(_key(c, "shard", "counters"), "counters.shard")
    count = check_int(_key(shard, "count", "counters.shard"), "counters.shard.count", 1, MAX_SHARDS)
    check_int(_key(shard, "index", "counters.shard"), "counters.shard.index", 1, count)
    check_str(_key(c, "backend", "counters"), "counters.backend")
    offered = _key(c, "offered", "counters")
    if offered is not None:
        check_int(offered, "counters.offered")
    o = check_object(_key(c, "options", "counters"), "counters.options")
    if _key(o, "samples", "counters.options") is not None:
        check_int(o["samples"], "counters.options.samples", 1)
    check_int(_key(o, "seed", "counters.options"), "counters.options.seed", -MAX_COUNT)
    _strings(_key(o, "unit_axis", "counters.options"), "counters.options.unit_axis")
    _strings(_key(o, "fail_on", "counters.options"), "counters.options.fail_on")
    _bool(_key(o, "per_unit", "counters.options"), "counters.options.per_unit")
    _strings(_key(c, "notes", "counters"), "counters.notes")
    check_int(_key(c, "samples", "counters"), "counters.samples")
    check_int(_key(c, "batches", "counters"), "counters.batches")
    if "capture_s" in c:
        check_number(c["capture_s"], "counters.capture_s", 0.0)


def _info(v: object, where: str) -> int:
    i = check_object(v, where)
    for k in ("name", "op", "module"):
        check_str(_key(i, k, where), f"{where}.{k}")
    kind = check_str(_key(i, "kind", where), f"{where}.kind")
    if kind not in CAPPED and kind not in BOUNDED and kind not in RECTIFIERS:
        raise Bad(f"{where}.kind", f"{kind[:40]!r} is not an activation kind actaudit knows")
    for k, x in check_object(_key(i, "params", where), f"{where}.params").items():
        check_number(x, f"{where}.params.{k}")
    shape = check_list(_key(i, "sample_shape", where), f"{where}.sample_shape")
    if len(shape) > MAX_RANK:
        raise Bad(f"{where}.sample_shape", f"has {len(shape)} dimensions, over {MAX_RANK}")
    for j, n in enumerate(shape):
        check_int(n, f"{where}.sample_shape[{j}]")
    check_int(_key(i, "unit_axis", where), f"{where}.unit_axis", 0, MAX_RANK)
    units = check_int(_key(i, "units", where), f"{where}.units", 1, MAX_UNITS)
    slopes = i.get("unit_slopes")
    if slopes is not None:
        for j, x in enumerate(check_list(slopes, f"{where}.unit_slopes", units)):
            check_number(x, f"{where}.unit_slopes[{j}]")
    if "unit_axis_source" in i:
        check_str(i["unit_axis_source"], f"{where}.unit_axis_source")
    if "model_output" in i:
        _bool(i["model_output"], f"{where}.model_output")
    if i.get("former_name") is not None:
        check_str(i["former_name"], f"{where}.former_name")
    return units


def _site(v: object, where: str) -> None:
    s = check_object(v, where)
    units = _info(_key(s, "info", where), f"{where}.info")
    elements = check_int(_key(s, "elements", where), f"{where}.elements")
    check_int(_key(s, "samples", where), f"{where}.samples")
    vectors = {name: check_list(_key(s, name, where), f"{where}.{name}", units) for name in VECTOR_FIELDS}
    for name in INT_FIELDS:
        v = cast("list[int]", vectors[name])  # used as ints only once all are, else each is checked
        if all(type(x) is int for x in v) and (not v or (min(v) >= 0 and max(v) <= elements)):
            continue
        for j, x in enumerate(v):
            check_int(x, f"{where}.{name}[{j}]", 0, elements)
    nonfinite = cast("list[int]", vectors["nonfinite"])  # INT_FIELDS, checked above
    for name in ("low", "high"):
        for j, (x, n) in enumerate(zip(cast("list[int]", vectors[name]), nonfinite, strict=True)):
            if x + n > elements:
                raise Bad(
                    f"{where}.{name}[{j}]",
                    f"{x} plus {n} non-finite values exceed the {elements} elements the site saw",
                )
    for name in VECTOR_FIELDS:
        if name in INT_FIELDS:
            continue
        for j, value in enumerate(vectors[name]):
            if type(value) is float or (type(value) is int and abs(value) < MAX_COUNT):
                continue
            if not (isinstance(value, str) and value in _NONFINITE):
                raise Bad(
                    f"{where}.{name}[{j}]", f"expected a number or one of {_NONFINITE}, found {_kind(value)}"
                )


def check_shard_report(path: str, d: object) -> None:
    """Refuse a shard report that is not shaped as ``audit --shard`` writes it, naming the first problem.

    The report's ``schema`` and ``counters.schema`` are checked by the caller, first.
    """
    try:
        d = check_object(d, "the top level")
        _top(d)
        c = check_object(_key(d, "counters", ""), "counters")
        _counters_top(c)
        for i, site in enumerate(check_list(_key(c, "sites", "counters"), "counters.sites")):
            _site(site, f"counters.sites[{i}]")
    except Bad as e:
        raise InputError(
            f"shard report {path}: {e}",
            hint="give the unchanged JSON reports of audit --shard K/N --format json",
        ) from None
