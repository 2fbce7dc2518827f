"""``--against BASELINE.json``: what got worse since a previous report.

Sites are matched by name. A regression is a unit dead now that was alive in the
baseline (by unit index), or a site whose dead fraction rose by more than
``max_dead_fraction_rise``. Both are gates, returned as :class:`GateResult` so that the
caller can append them to ``Report.gates`` and the usual exit code follows. Sites that
exist on one side only are listed, not gated: a changed architecture is not a
regression, but the comparison says how much of the model it could not match.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from ..errors import InputError
from ..gates import Gate, GateResult
from ..jsonform import JSON, members, number, picked, unit_list
from ..naming import former_note
from .audit import SCHEMA
from .draw import Document, Lines, Table, capped, gate_line
from .draw import render as draw_render

GATE_NEW_DEAD = "against:new-dead>{n}"
GATE_RISE = "against:dead-fraction-rise>{x:g}"
_EPS = 1e-9  # fractions are rounded to 6 digits in the JSON; do not gate on that noise


_COUNTS = (
    "name",
    "units",
    "baseline_units",
    "dead",
    "baseline_dead",
    "dead_fraction",
    "baseline_dead_fraction",
)


@dataclass
class SiteChange:
    name: str
    units: int
    baseline_units: int
    dead: int
    baseline_dead: int
    dead_fraction: float
    baseline_dead_fraction: float
    new_dead_units: list[int] = field(default_factory=list)
    revived_units: list[int] = field(default_factory=list)

    @property
    def units_changed(self) -> bool:
        return self.units != self.baseline_units

    @property
    def dead_fraction_rise(self) -> float:
        return self.dead_fraction - self.baseline_dead_fraction

    @property
    def changed(self) -> bool:
        return bool(self.new_dead_units or self.revived_units or abs(self.dead_fraction_rise) > _EPS)

    def change_text(self) -> str:
        """``dead 1 → 3 of 8 (dead-fraction-rise 0.25 = +25.0 points); newly dead units 4, 5``.

        The rise is printed as the ``against:dead-fraction-rise`` gate reads it (a fraction) and in points.
        """
        rise = self.dead_fraction_rise
        parts = [
            f"dead {self.baseline_dead} → {self.dead} of {self.units} "
            f"(dead-fraction-rise {round(rise, 6):g} = {100 * rise:+.1f} points)"
        ]
        if self.new_dead_units:
            parts.append(f"newly dead units {capped(self.new_dead_units, 12)}")
        if self.revived_units:
            parts.append(f"revived {capped(self.revived_units, 12)}")
        return "; ".join(parts)

    def to_dict(self) -> dict[str, object]:
        return {
            **picked(self, *_COUNTS),
            "dead_fraction_rise": round(self.dead_fraction_rise, 6),
            "new_dead_units": self.new_dead_units,
            "revived_units": self.revived_units,
            "units_changed": self.units_changed,
        }


@dataclass
class Comparison:
    """The result of :func:`compare`; ``gate_results`` fail on regressions."""

    sites: list[SiteChange]
    added_sites: list[str]
    removed_sites: list[str]
    max_dead_fraction_rise: float
    max_new_dead: int
    gate_results: list[GateResult]
    warnings: list[str] = field(default_factory=list)
    path: str | None = None

    @property
    def new_dead(self) -> int:
        return sum(len(s.new_dead_units) for s in self.sites)

    @property
    def revived(self) -> int:
        return sum(len(s.revived_units) for s in self.sites)

    @property
    def risen(self) -> list[SiteChange]:
        """Sites whose dead fraction rose by more than the allowed amount."""
        return [s for s in self.sites if s.dead_fraction_rise > self.max_dead_fraction_rise + _EPS]

    @property
    def passed(self) -> bool:
        return not any(g.failed for g in self.gate_results)

    def to_dict(self) -> dict[str, object]:
        """The ``baseline`` section of the JSON report (see ``report.schema.json``)."""
        return {
            **picked(self, "path", "max_dead_fraction_rise", "max_new_dead", "new_dead", "revived"),
            "sites": [
                s.to_dict() for s in self.sites if s.new_dead_units or s.revived_units or s.dead_fraction_rise
            ],
            "added_sites": self.added_sites,
            "removed_sites": self.removed_sites,
            "warnings": self.warnings,
            "gates": [g.to_dict() for g in self.gate_results],
        }

    def document(self) -> Document:
        """A few lines: the counts first, then per site what changed, unmatched sites, warnings, gates."""
        title = (
            f"against baseline{f' {self.path}' if self.path else ''}: {self.new_dead} new dead units, "
            f"{self.revived} revived, {len(self.risen)} sites with dead-fraction-rise > "
            f"{self.max_dead_fraction_rise:g} ({100 * self.max_dead_fraction_rise:.1f} points)"
        )
        lines = [f"  {s.name}: {s.change_text()}" for s in self.sites if s.changed]
        if self.added_sites:
            lines.append(f"  not in the baseline: {capped(self.added_sites, 8)}")
        if self.removed_sites:
            lines.append(f"  only in the baseline: {capped(self.removed_sites, 8)}")
        lines += [f"  warning: {w}" for w in self.warnings]
        lines += [gate_line(g) for g in self.gate_results]
        rows = [
            [
                s.name,
                s.baseline_dead,
                s.dead,
                round(s.dead_fraction_rise, 6),
                _joined(s.new_dead_units),
                _joined(s.revived_units),
            ]
            for s in self.sites
            if s.changed
        ]
        return Document(title, [Lines(lines)], Table(_CSV_COLUMNS, rows))

    def render(self, fmt: str = "table") -> str:
        """The terminal form (the CLI prints it on stderr); also markdown, csv and json."""
        return draw_render(self, fmt)


_CSV_COLUMNS = ("name", "baseline_dead", "dead", "dead_fraction_rise", "new_dead_units", "revived_units")


def _joined(units: list[int]) -> str:
    return " ".join(map(str, units))


def load_baseline(path: str | os.PathLike[str]) -> JSON:
    """Read a report written by ``actaudit audit --format json``; user errors are :class:`InputError`.

    Everything :func:`compare` reads is checked here, before the audit runs: a baseline of the
    wrong shape is exit 2 naming the file and the JSON path, not a failure after the whole run.
    """
    from ..jsonread import read_json

    p = Path(path)
    if not p.is_file():
        raise InputError(f"baseline report {p} does not exist", hint="write one with --format json -o FILE")
    data = read_json(p, "baseline report", hint="give a report from --format json")
    _check_report(data, f"baseline report {p}")
    _check_sites(data, f"baseline report {p}")
    return data


def _check_sites(d: JSON, what: str) -> None:
    """The fields of each site that :func:`compare` reads: names, unit counts, dead units in range."""
    from ..shardcheck import Bad, check_int, check_list, check_number, check_object, check_str

    try:
        for k in ("settings", "calibration"):
            if k in d:
                check_object(d[k], k)
        for i, v in enumerate(members(d, "sites")):
            where = f"sites[{i}]"
            site = check_object(v, where)
            check_str(site.get("name"), f"{where}.name")
            units = check_int(site.get("units"), f"{where}.units")
            check_int(site.get("dead"), f"{where}.dead", 0, units)
            if site.get("dead_fraction") is not None:
                check_number(site["dead_fraction"], f"{where}.dead_fraction", 0.0, 1.0)
            dead = check_list(site.get("dead_units"), f"{where}.dead_units")
            if len(dead) > units:
                raise Bad(f"{where}.dead_units", f"lists {len(dead)} units of a site with {units}")
            for j, u in enumerate(dead):
                check_int(u, f"{where}.dead_units[{j}]", 0, max(units - 1, 0))
    except Bad as e:
        raise InputError(f"{what}: {e}", hint="give a report from --format json") from None


def _check_report(d: object, what: str) -> None:
    if not isinstance(d, dict) or not isinstance(d.get("sites"), list):
        raise InputError(f"{what} is not an actaudit report", hint="give a report from --format json")
    if d.get("schema") != SCHEMA:
        raise InputError(f"{what} has schema {d.get('schema')!r}; this actaudit reads {SCHEMA!r}")


def compare(
    report: JSON,
    baseline: JSON,
    *,
    max_dead_fraction_rise: float = 0.0,
    max_new_dead: int = 0,
    baseline_path: str | None = None,
    allow_renamed: bool = False,
) -> Comparison:
    """Compare two ``Report.to_dict()`` results. ``max_dead_fraction_rise`` is a fraction (0.05 = 5 points).

    When no site name matches, the gates would pass on nothing: that is an
    :class:`InputError` ("not comparable") unless ``allow_renamed``, which pairs the
    unmatched sites by position where their kind and unit count agree.
    """
    if not 0.0 <= max_dead_fraction_rise <= 1.0:
        raise InputError(f"the allowed dead-fraction rise must be in [0, 1], got {max_dead_fraction_rise}")
    if max_new_dead < 0:
        raise InputError(f"the allowed number of new dead units must be >= 0, got {max_new_dead}")
    _check_report(report, "the report")
    _check_report(baseline, f"baseline report {baseline_path}" if baseline_path else "the baseline")
    now = _by_name(members(report, "sites"))
    before = _by_name(members(baseline, "sites"))
    where = f"--against {baseline_path}" if baseline_path else "the baseline"
    renamed, warnings = _by_former(now, before)
    if not renamed:
        renamed, warnings = _renamed(now, before, where, allow_renamed)
    changes: list[SiteChange] = []
    for name, s in now.items():
        b = before.get(renamed.get(name, name))
        if b is not None:
            changes.append(_site_change(name, s, b, warnings))
    paired = set(renamed.values())
    return Comparison(
        sites=changes,
        added_sites=[n for n in now if renamed.get(n, n) not in before],
        removed_sites=[n for n in before if n not in now and n not in paired],
        max_dead_fraction_rise=max_dead_fraction_rise,
        max_new_dead=max_new_dead,
        gate_results=_gates(changes, max_dead_fraction_rise, max_new_dead),
        warnings=warnings + _setting_warnings(report, baseline),
        path=baseline_path,
    )


def _by_former(now: dict[str, JSON], before: dict[str, JSON]) -> tuple[dict[str, str], list[str]]:
    """Site name now → baseline name where the two differ by the naming rule only: one report's
    ``former_name`` is the other's name (a baseline or report written before functional sites were
    named after their producer). The warning lists the pairs, former name first."""
    renamed: dict[str, str] = {}
    notes: list[tuple[str, str]] = []
    by_former = {str(b["former_name"]): m for m, b in before.items() if isinstance(b.get("former_name"), str)}
    for n, s in now.items():
        if n in before:
            continue
        f = s.get("former_name")
        if isinstance(f, str) and f in before and f not in now:
            renamed[n] = f
            notes.append((f, n))
        elif n in by_former and by_former[n] not in now:
            renamed[n] = by_former[n]
            notes.append((n, by_former[n]))
    note = former_note("the baseline", notes)
    return renamed, [note] if note else []


def _renamed(
    now: dict[str, JSON], before: dict[str, JSON], where: str, allow: bool
) -> tuple[dict[str, str], list[str]]:
    """Site name now → baseline name where no name matches (``allow``), and the warning that says so."""
    if not (now and before and not set(now) & set(before)):
        return {}, []
    if not allow:
        raise InputError(
            f"{where} is not comparable: none of its {len(before)} site names matches one of the "
            f"{len(now)} sites of this report (another model, exporter or naming?)",
            hint="compare reports of the same model, or pass --allow-renamed-sites to pair sites by position",
        )
    renamed = _pair_by_position(now, before)
    if not renamed:
        raise InputError(
            f"{where} is not comparable: no site matches by name, nor by position, kind and unit count"
        )
    return renamed, [
        f"no site name matches the baseline: {len(renamed)} site(s) paired by position, kind and unit count"
    ]


def _site_change(name: str, s: JSON, b: JSON, warnings: list[str]) -> SiteChange:
    c = SiteChange(
        name=name,
        units=int(number(s, "units")),
        baseline_units=int(number(b, "units")),
        dead=int(number(s, "dead")),
        baseline_dead=int(number(b, "dead")),
        dead_fraction=float(cast(float | None, s["dead_fraction"]) or 0.0),
        baseline_dead_fraction=float(cast(float | None, b["dead_fraction"]) or 0.0),
    )
    if c.units_changed:
        # Unit indices mean nothing across a resized layer; compare fractions only.
        warnings.append(
            f"{name} has {c.units} units, {c.baseline_units} in the baseline: only its dead fraction is compared"
        )
    else:
        dead_now, dead_before = set(unit_list(s, "dead_units")), set(unit_list(b, "dead_units"))
        c.new_dead_units = sorted(dead_now - dead_before)
        c.revived_units = sorted(dead_before - dead_now)
    return c


def _gates(changes: list[SiteChange], max_rise: float, max_new_dead: int) -> list[GateResult]:
    n_new = sum(len(c.new_dead_units) for c in changes)
    risen = [c for c in changes if c.dead_fraction_rise > max_rise + _EPS]
    worst_rise = max((c.dead_fraction_rise for c in changes), default=0.0)
    new_dead = Gate(GATE_NEW_DEAD.format(n=max_new_dead), "new-dead", ">", float(max_new_dead))
    rise = Gate(GATE_RISE.format(x=max_rise), "dead-fraction-rise", ">", max_rise)
    return [
        GateResult(
            new_dead,
            n_new > max_new_dead,
            float(n_new),
            [c.name for c in changes if c.new_dead_units] if n_new > max_new_dead else [],
        ),
        GateResult(rise, bool(risen), round(max(worst_rise, 0.0), 6), [c.name for c in risen]),
    ]


def _pair_by_position(now: dict[str, JSON], before: dict[str, JSON]) -> dict[str, str]:
    """Site name now → baseline name, pairing the i-th sites where kind and unit count agree."""
    out = {}
    for (n, s), (m, b) in zip(now.items(), before.items(), strict=False):
        if s.get("kind") == b.get("kind") and s.get("units") == b.get("units"):
            out[n] = m
    return out


def _by_name(sites: list[JSON]) -> dict[str, JSON]:
    out: dict[str, JSON] = {}
    for s in sites:
        out.setdefault(str(s["name"]), s)
    return out


def _setting_warnings(report: JSON, baseline: JSON) -> list[str]:
    out = []
    a, b = cast(JSON, report.get("settings", {})), cast(JSON, baseline.get("settings", {}))
    differ = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    if differ:
        out.append(
            "thresholds differ from the baseline's ("
            + ", ".join(f"{k.replace('_', '-')} {b.get(k)} → {a.get(k)}" for k in differ)
            + "): changes may come from the settings, not the model"
        )
    ca, cb = cast(JSON, report.get("calibration", {})), cast(JSON, baseline.get("calibration", {}))
    if (ca.get("source"), ca.get("samples")) != (cb.get("source"), cb.get("samples")):
        out.append(
            f"calibration differs from the baseline's ({cb.get('samples')} samples from {cb.get('source')} → "
            f"{ca.get('samples')} from {ca.get('source')}): a unit can look dead on one data set and not the other"
        )
    return out
