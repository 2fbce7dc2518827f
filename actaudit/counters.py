"""The exact counters of a shard report (``actaudit.counters/1``): what ``actaudit merge`` adds up.

Every per-unit sum, count, minimum and maximum of every site, with the exact site facts
(unquantised parameters, PReLU slopes). ``audit --shard`` writes them (:mod:`actaudit.shard`),
``merge`` reads them back (:mod:`actaudit.merge`); this module imports neither.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .stats import INT_FIELDS, VECTOR_FIELDS, Capture, SiteInfo, SiteResult, SiteStats

COUNTERS_SCHEMA = "actaudit.counters/1"


def _enc(x: float) -> float | str:
    """JSON has no inf/nan: a unit that saw nothing keeps min=+inf, max=-inf."""
    return x if math.isfinite(x) else repr(float(x))


def _dec(x: float | str) -> float:
    return float(x)


def site_counters(site: SiteResult) -> dict[str, object]:
    info, st = site.info, site.stats
    d: dict[str, object] = {
        "info": {
            **info.to_dict(),
            "unit_slopes": None if info.unit_slopes is None else [float(s) for s in info.unit_slopes],
            "model_output": info.model_output,
        },
        "elements": st.elements,
        "samples": st.samples,
    }
    for name in VECTOR_FIELDS:
        v = getattr(st, name)
        d[name] = [int(x) for x in v] if name in INT_FIELDS else [_enc(float(x)) for x in v]
    return d


def site_from_counters(d: dict[str, Any]) -> SiteResult:
    i = d["info"]
    info = SiteInfo(
        name=i["name"],
        op=i["op"],
        kind=i["kind"],
        params={k: float(v) for k, v in i["params"].items()},
        unit_axis=int(i["unit_axis"]),
        units=int(i["units"]),
        sample_shape=tuple(int(x) for x in i["sample_shape"]),
        module=i["module"],
        unit_slopes=None if i.get("unit_slopes") is None else [float(s) for s in i["unit_slopes"]],
        unit_axis_source=i.get("unit_axis_source", "producer"),
        model_output=bool(i.get("model_output", False)),
        former_name=i.get("former_name") or None,
    )
    st = SiteStats.from_dict(
        {
            "units": info.units,
            "elements": d["elements"],
            "samples": d["samples"],
            **{n: d[n] if n in INT_FIELDS else [_dec(x) for x in d[n]] for n in VECTOR_FIELDS},
        }
    )
    return SiteResult(info, st)


def counters_section(
    *,
    shard: dict[str, int],
    backend: str,
    offered: int | None,
    options: dict[str, object],
    notes: Sequence[str],
    cap: Capture,
    capture_s: float,
) -> dict[str, object]:
    return {
        "schema": COUNTERS_SCHEMA,
        "shard": shard,
        "backend": backend,
        "offered": offered,
        "options": options,
        "notes": list(notes),
        "samples": cap.samples,
        "batches": cap.batches,
        "capture_s": round(capture_s, 4),
        "sites": [site_counters(s) for s in cap.sites],
    }
