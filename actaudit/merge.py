"""Shard reports and their exact merge: ``audit --shard K/N`` writes counters, ``merge`` adds them up.

A shard report carries, under ``counters`` (``actaudit.counters/1``), every per-unit sum,
count, minimum and maximum of every site, with the exact site facts (unquantised
parameters, PReLU slopes) and the options that change the numbers. ``merge`` checks that
the shards belong together (same model hash, settings, data, options; shards 1..N each
exactly once), adds the counters up and builds the report through the same code path
as a single run, so sites, unit lists, coverage, warnings and gates come out as that run
writes them. Float sums are added in another order than in one run: rates agree to float
rounding (the report's six significant digits hide it in practice).

Nothing here imports torch, onnx or onnxruntime.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .counters import COUNTERS_SCHEMA, site_from_counters
from .data import DataSource
from .errors import InputError
from .naming import former_note
from .report import SCHEMA, Report
from .stats import Capture, SiteResult, Uncovered
from .verdicts import Settings


@dataclass
class _Shard:
    path: str
    report: dict[str, Any]
    counters: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        s = self.counters["shard"]
        return f"{s['index']}/{s['count']}"


def _read(path: str) -> _Shard:
    from .jsonread import read_json
    from .shardcheck import check_shard_report

    d = read_json(path, "shard report", hint="give --format json reports")
    if not isinstance(d, dict) or d.get("schema") != SCHEMA:
        raise InputError(f"{path} is not an actaudit report ({SCHEMA})", hint="give --format json reports")
    c = d.get("counters")
    if not isinstance(c, dict):
        raise InputError(
            f"{path} carries no counters", hint="write shard reports with audit --shard K/N --format json"
        )
    if c.get("schema") != COUNTERS_SCHEMA:
        raise InputError(
            f"{path} has counters {c.get('schema')!r}; this actaudit reads {COUNTERS_SCHEMA}",
            hint="write every shard with the same actaudit version",
        )
    check_shard_report(path, d)
    return _Shard(path, d, c)


def _same(shards: list[_Shard], what: str, get: Callable[[_Shard], object]) -> None:
    first = get(shards[0])
    for s in shards[1:]:
        other = get(s)
        if other != first:
            raise InputError(
                f"{s.path} and {shards[0].path} differ in {what}: {_short(other)} vs {_short(first)}",
                hint="merge only shards of one audit (same model, data and options)",
            )


def _short(x: object) -> str:
    text = json.dumps(x, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


def _site_shape(site: dict[str, Any]) -> list[object]:
    i = site["info"]
    return [i["name"], i["op"], i["kind"], i["unit_axis"], i["units"], i["sample_shape"]]


def align_names(shards: list[_Shard]) -> str | None:
    """Give sites of shards written before functional sites were named after their producer the
    names the newer shards use (their ``former_name`` says which); the note that says so, if any."""
    current: dict[str, str] = {}
    for s in shards:
        for x in s.counters["sites"]:
            f = x["info"].get("former_name")
            if isinstance(f, str) and f:
                current[f] = str(x["info"]["name"])
    pairs: list[tuple[str, str]] = []
    for s in shards:
        names = {str(x["info"]["name"]) for x in s.counters["sites"]}
        for x in s.counters["sites"]:
            i = x["info"]
            new = current.get(str(i["name"]))
            if new is not None and not i.get("former_name") and new not in names:
                pairs.append((str(i["name"]), new))
                i["former_name"], i["name"] = i["name"], new
    return former_note("an older shard report", pairs)


def check_shards(shards: list[_Shard]) -> None:
    """Refuse shards that do not make one audit together, naming the first difference."""
    _same(shards, "the model (sha256)", lambda s: [s.report["model"]["sha256"], s.report["model"]["format"]])
    _same(shards, "the settings", lambda s: s.report["settings"])
    _same(shards, "the options", lambda s: s.counters["options"])
    _same(shards, "the calibration data", lambda s: _calibration_key(s.report["calibration"]))
    _same(shards, "the number of shards", lambda s: s.counters["shard"]["count"])
    _same(shards, "the offered samples", lambda s: s.counters["offered"])
    _same(shards, "the backend", lambda s: s.counters["backend"])
    _same(shards, "the model's inputs", lambda s: s.report["inputs"])
    seen: dict[int, str] = {}
    for s in shards:
        k = int(s.counters["shard"]["index"])
        if k in seen:
            raise InputError(
                f"shard {s.label} is given twice ({seen[k]} and {s.path})", hint="give each shard once"
            )
        seen[k] = s.path
    count = int(shards[0].counters["shard"]["count"])
    missing = []
    for k in range(1, count + 1):  # at most len(seen) + 10 steps: a claimed count of 10**9 lists 10 names
        if k not in seen:
            missing.append(f"{k}/{count}")
            if len(missing) == 10:
                break
    if missing:
        raise InputError(
            f"shard{'s' if len(missing) > 1 else ''} {', '.join(missing)}{', ...' if count - len(seen) > 10 else ''} "
            "missing "
            f"({len(shards)} of {count} given)",
            hint="give every shard report of the audit",
        )
    _same(
        shards,
        "the activation sites they saw (data-dependent control flow?)",
        lambda s: [_site_shape(x) for x in s.counters["sites"]],
    )
    _same(shards, "the uncovered activations", lambda s: s.report["uncovered"])


def _calibration_key(cal: dict[str, Any]) -> dict[str, object]:
    return {k: cal.get(k) for k in ("source", "batch_size", "synthetic", "seed")}


class _Loaded:
    """The facts of a loaded model that :func:`actaudit.api.build_report` reads."""

    def __init__(self, model: dict[str, Any], backend: str, notes: list[str]) -> None:
        self.path = model["path"]
        self.fmt = model["format"]
        self.sha256 = model["sha256"]
        self.backend = backend
        self.notes = notes


def merge_reports(
    paths: Sequence[str | os.PathLike[str]],
    *,
    fail_on: Sequence[str] | None = None,
    per_unit: bool | None = None,
    allow_uncovered: bool | None = None,
) -> Report:
    """The report a single run over all shards' data would have written."""
    from .assemble import build_report
    from .gates import parse_gate
    from .options import AuditOptions

    if not paths:
        raise InputError("merge needs at least one shard report")
    shards = [_read(os.fspath(p)) for p in paths]
    renamed = align_names(shards)
    check_shards(shards)
    shards.sort(key=lambda s: int(s.counters["shard"]["index"]))
    first = shards[0]
    parts = [[site_from_counters(x) for x in s.counters["sites"]] for s in shards]
    sites = []
    for j, site in enumerate(parts[0]):
        st = site.stats
        for other in parts[1:]:
            st = st.merge(other[j].stats)
        sites.append(SiteResult(site.info, st))
    cap = Capture(
        sites=sites,
        samples=sum(int(s.counters["samples"]) for s in shards),
        batches=sum(int(s.counters["batches"]) for s in shards),
        uncovered=[Uncovered(u["name"], u["op"], u["reason"]) for u in first.report["uncovered"]],
        inputs=first.report["inputs"],
    )
    notes = list(dict.fromkeys(n for s in shards for n in s.counters["notes"]))
    if renamed:
        notes.append(renamed)
    o = first.counters["options"]
    cal = first.report["calibration"]
    opts = AuditOptions(
        samples=o["samples"],
        batch_size=int(cal["batch_size"]),
        seed=int(cal.get("seed", o.get("seed", 0))),
        unit_axis=list(o["unit_axis"]),
        settings=Settings(**{k: float(v) for k, v in first.report["settings"].items()}),
        fail_on=list(o["fail_on"]) if fail_on is None else list(fail_on),
        per_unit=bool(o["per_unit"]) if per_unit is None else per_unit,
        allow_uncovered=bool(o.get("allow_uncovered", False)) if allow_uncovered is None else allow_uncovered,
    )
    source = DataSource(
        lambda: iter(()),
        cal["source"],
        synthetic=bool(cal["synthetic"]),
        total_samples=first.counters["offered"],
    )
    loaded = _Loaded(first.report["model"], first.counters["backend"], notes)
    gates = [parse_gate(g) for g in opts.fail_on]
    capture_s = sum(float(s.counters.get("capture_s", 0.0)) for s in shards)
    report = build_report(loaded, source, cap, opts, gates, {"capture_s": capture_s})
    report.run["shards"] = len(shards)
    return report
