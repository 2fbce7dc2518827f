"""The audit report: plain Python structures, a stable JSON form, and text renderings.

``Report.to_dict()`` is the schema ``actaudit.report/1`` (see docs/json.md). Everything in
it is deterministic for the same checkpoint, data and flags, except the ``run``
section (timings, host), which is kept apart so that CI can diff the rest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypedDict, cast

import numpy as np

from ..gates import GateResult
from ..jsonform import envelope, picked
from ..jsonform import json_float as _r
from ..sanitize import text
from ..stats import Uncovered
from ..verdicts import Settings, SiteVerdict, bad_fraction, expected_saturation, upper_bound_95, worst_sites
from . import evidence, terminal
from .draw import (
    FORMATS,
    Block,
    Document,
    Lines,
    Table,
    gate_line,
    grid,
    layout,
    pct,
    plain,
    text_form,
    to_json,
)
from .draw import render as draw_render

if TYPE_CHECKING:
    from .ffn import FfnSection

SCHEMA = "actaudit.report/1"
__all__ = ["FORMATS", "SCHEMA", "Report", "rows_for_csv"]


class Summary(TypedDict):
    """The report's ``summary`` section: counts over all audited sites."""

    sites: int
    units: int
    rectifier_units: int
    bounded_units: int
    dead: int
    dead_fraction: float | None
    saturated: int
    saturated_fraction: float | None
    rarely_firing: int
    rarely_firing_fraction: float | None
    never_positive: int
    nonfinite: int
    uncovered: int
    activations_found: int
    audited_fraction: float | None


@dataclass
class Report:
    model: dict[str, object]
    calibration: dict[str, object]
    settings: Settings
    sites: list[SiteVerdict]
    uncovered: list[Uncovered] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # information, not warnings: nothing to fix
    inputs: list[dict[str, object]] = field(default_factory=list)
    gates: list[GateResult] = field(default_factory=list)
    run: dict[str, object] = field(default_factory=dict)
    per_unit: bool = False
    baseline: dict[str, object] | None = None  # set by --against: the comparison with a previous report
    counters: dict[str, object] | None = None  # set by --shard: exact counters for `actaudit merge`
    ffn: FfnSection | None = None  # a transformer's FFN neurons per layer (report/ffn.py)
    # The command line's model, --arch, --calib and --data-loader, for the next-step commands
    # (report/nextsteps.py); never written to JSON.
    invocation: dict[str, object] | None = None

    def next_steps(self) -> list[str]:
        from .nextsteps import next_steps

        return next_steps(self)

    @property
    def passed(self) -> bool:
        return not any(g.failed for g in self.gates)

    def summary(self) -> Summary:
        die = [v for v in self.sites if v.can_die]
        sat = [v for v in self.sites if v.can_saturate]
        die_units = sum(v.units for v in die)
        sat_units = sum(v.units for v in sat)
        dead = sum(len(v.dead_units) for v in self.sites)
        saturated = sum(len(v.saturated_units) for v in self.sites)
        rare = sum(len(v.rarely_firing_units) for v in self.sites)
        return {
            "sites": len(self.sites),
            "units": sum(v.units for v in self.sites),
            "rectifier_units": die_units,
            "bounded_units": sat_units,
            "dead": dead,
            "dead_fraction": _r(dead / die_units) if die_units else 0.0,
            "saturated": saturated,
            "saturated_fraction": _r(saturated / sat_units) if sat_units else 0.0,
            "rarely_firing": rare,
            "rarely_firing_fraction": _r(rare / die_units) if die_units else 0.0,
            "never_positive": sum(len(v.never_positive_units) for v in self.sites),
            "nonfinite": int(sum(int(v.stats.nonfinite.sum()) for v in self.sites)),
            "uncovered": len(self.uncovered),
            # How much of the model was audited: sites audited over activation sites found.
            "activations_found": len(self.sites) + len(self.uncovered),
            "audited_fraction": _r(len(self.sites) / (len(self.sites) + len(self.uncovered)))
            if self.sites or self.uncovered
            else None,
        }

    def site_dict(self, index: int, v: SiteVerdict) -> dict[str, object]:
        info, st = v.info, v.stats
        fr = v.fire_rate[np.isfinite(v.fire_rate)]
        thr_low, thr_high = _thresholds(v, self.settings)
        d: dict[str, object] = {
            "index": index,
            "name": info.name,
            **({"former_name": info.former_name} if info.former_name else {}),
            "op": info.op,
            "kind": info.kind,
            "family": v.family.value,
            "module": info.module,
            "params": {k: _r(float(x)) for k, x in sorted(info.params.items())},
            "unit_axis": info.unit_axis,
            "unit_axis_source": info.unit_axis_source,
            "units": info.units,
            "sample_shape": list(info.sample_shape),
            "thresholds": {"low": _r(thr_low), "high": _r(thr_high)},
            "coverage": {
                "samples": st.samples,
                "elements_per_unit": st.elements,
                "dead_rate_upper_95": _r(upper_bound_95(st.samples)) if v.dead_units else None,
            },
            "dead": len(v.dead_units),
            "saturated": len(v.saturated_units),
            "rarely_firing": len(v.rarely_firing_units),
            "never_positive": len(v.never_positive_units),
            "dead_fraction": _r(v.dead_fraction),
            "saturated_fraction": _r(v.saturated_fraction),
            "dead_units": v.dead_units,
            "saturated_units": v.saturated_units,
            "saturated_low_units": v.saturated_low_units,
            "saturated_high_units": v.saturated_high_units,
            "rarely_firing_units": v.rarely_firing_units,
            "never_positive_units": v.never_positive_units,
            "nonfinite_values": int(st.nonfinite.sum()),
            "nonfinite_units": v.nonfinite_units,
            "fire_rate": {
                "min": _r(float(fr.min())) if fr.size else None,
                "mean": _r(float(fr.mean())) if fr.size else None,
                "max": _r(float(fr.max())) if fr.size else None,
            },
            "pre_activation": {
                "min": _r(float(st.min.min())) if st.units else None,
                # fmax skips units not measured (NaN: --relu-from-output, max <= 0), which cannot be the largest
                "max": _r(float(np.fmax.reduce(st.max))) if st.units else None,
            },
        }
        if info.model_output:
            d["model_output"] = True
        d.update(evidence.site_evidence(v))
        if v.proof_note:
            d["proof_note"] = v.proof_note
        if self.per_unit:
            d["per_unit"] = {
                "fire_rate": [_r(float(x)) for x in v.fire_rate],
                "stuck_low_rate": [_r(float(x)) for x in v.low_rate],
                "stuck_high_rate": [_r(float(x)) for x in v.high_rate],
                "min": [_r(float(x)) for x in st.min],
                "max": [_r(float(x)) for x in st.max],
                "neg_mean": [_r(float(x)) for x in st.neg_mean()],
            }
        return d

    def to_dict(self) -> dict[str, object]:
        return {
            **envelope(SCHEMA),
            **picked(self, "model", "calibration", "inputs"),
            "settings": self.settings.to_dict(),
            "summary": self.summary(),
            "gates": [g.to_dict() for g in self.gates],
            "passed": self.passed,
            "sites": [self.site_dict(i, v) for i, v in enumerate(self.sites)],
            "uncovered": [u.to_dict() for u in self.uncovered],
            "warnings": list(self.warnings),
            **({"notes": list(self.notes)} if self.notes else {}),
            **({"next_steps": steps} if (steps := self.next_steps()) else {}),
            **({"baseline": self.baseline} if self.baseline is not None else {}),
            **({"counters": self.counters} if self.counters is not None else {}),
            **({"ffn": self.ffn} if self.ffn is not None else {}),
            **({"evidence": tiers} if (tiers := evidence.totals(self.sites)) else {}),
            "run": self.run,
        }

    def to_json(self, *, include_run: bool = True) -> str:
        d = self.to_dict()
        if not include_run:
            d.pop("run")
        return to_json(d)

    def document(self, pretty: bool = False, color: bool = False) -> Document:
        """The title, the site table (``pretty``: with the dead/saturated bar) and the remarks."""
        return Document(
            _title(self),
            [site_table(self, pretty, color), *_ffn(self), Lines(_remarks(self))],
            csv_table(self),
        )

    def render(self, fmt: str = "table", *, color: bool = False, width: int | None = None) -> str:
        """``color`` adds ANSI colours to the table (the CLI sets it on a terminal without NO_COLOR).

        ``width`` fits the table into that many columns (the CLI passes the terminal's); ``None``
        gives the full table, as files and pipes get it.
        """
        if fmt not in ("table", "markdown"):
            return draw_render(self, fmt)
        pretty = fmt == "table"
        table = site_table(self, pretty, color and pretty)
        if pretty and width is not None and _widest(grid(table, markdown=False)) > width:
            return _fitted(self, color, width)
        return text_form(
            Document(_title(self), [table, *_ffn(self), Lines(_remarks(self))]), markdown=not pretty
        )


def _ffn(report: Report) -> list[Block]:
    """The transformer FFN table, for a report that has one."""
    if report.ffn is None:
        return []
    from .ffn import ffn_blocks

    return ffn_blocks(report.ffn)


def _thresholds(v: SiteVerdict, s: Settings) -> tuple[float | None, float | None]:
    from ..kinds import Activation

    t = Activation(v.info.kind, v.info.params).thresholds(s.stuck_fraction)
    return (t.low if math.isfinite(t.low) else None, t.high if math.isfinite(t.high) else None)


def rows_for_csv(report: Report) -> str:
    """The CSV form of ``report``."""
    return draw_render(report, "csv")


def _row(
    i: int,
    v: SiteVerdict,
    pretty: bool,
    color: bool = False,
    bar_width: int = terminal.BAR_WIDTH,
    proven: bool = False,
) -> list[object]:
    bad = bad_fraction(v)
    fr = v.fire_rate
    mean_fire = float(fr[fr == fr].mean()) if fr.size and (fr == fr).any() else None
    row: list[object] = [
        i,
        text(v.info.name),  # names come from the file: no terminal escapes
        v.info.kind,
        v.info.units,
        len(v.dead_units) if v.can_die else "-",
        len(v.saturated_units) if v.can_saturate else "-",
        len(v.rarely_firing_units) if v.can_die else "-",
        pct(mean_fire) if v.can_die else "-",
    ]
    if proven:
        row[5:5] = evidence.cells(v)
    if pretty:
        cell = f"{terminal.bar(bad, bar_width)} {pct(bad)}" if bar_width else pct(bad)
        row.append(terminal.paint(cell, bad, color))
        row[1] = terminal.paint(str(row[1]), bad, color)
    return row


def _total_row(report: Report, pretty: bool, proven: bool = False) -> list[object]:
    s = report.summary()
    total: list[object] = ["", "total", "", s["units"], s["dead"], s["saturated"], s["rarely_firing"], ""]
    if proven:
        total[5:5] = evidence.total_cells(report.sites)
    if pretty:
        total.append("")
    return total


def _has_proof(report: Report) -> bool:
    return any(v.proven_dead_units is not None for v in report.sites)


def site_table(report: Report, pretty: bool, color: bool = False) -> Table:
    """One row per site and a total row; ``pretty`` (the terminal table) adds the dead/saturated bar."""
    headers = ["#", "site", "kind", "units", "dead", "saturated", "rare", "fire"]
    if pretty:
        headers.append("dead/saturated")
    proven = _has_proof(report)
    if proven:
        headers[5:5] = evidence.HEADERS
    rows = [_row(i, v, pretty, color, proven=proven) for i, v in enumerate(report.sites)]
    rows.append(_total_row(report, pretty, proven))
    return Table(headers, rows)


CSV_COLUMNS = (
    "index",
    "name",
    "op",
    "kind",
    "unit_axis",
    "units",
    "dead",
    "saturated",
    "rarely_firing",
    "never_positive",
    "dead_fraction",
    "saturated_fraction",
    "fire_rate_mean",
    "samples",
    "dead_units",
    "saturated_units",
    "former_name",  # a site's name before functional sites were named after their producing module
)


def csv_table(report: Report) -> Table:
    """The CSV: one row per site with the JSON's numbers (unit lists space-separated)."""
    rows: list[list[object]] = []
    for i, v in enumerate(report.sites):
        d = report.site_dict(i, v)
        rows.append(
            [
                *(d[k] for k in CSV_COLUMNS[:12]),
                # as the table: a bounded unit does not "fire"
                cast(dict[str, object], d["fire_rate"])["mean"] if v.can_die else "",
                cast(dict[str, object], d["coverage"])["samples"],
                " ".join(map(str, cast(list[int], d["dead_units"]))),
                " ".join(map(str, cast(list[int], d["saturated_units"]))),
                d.get("former_name", ""),
            ]
        )
    return Table(CSV_COLUMNS, rows)


def _title(report: Report) -> str:
    m, c = report.model, report.calibration
    synth = " (synthetic)" if c.get("synthetic") else ""
    return f"{m.get('path')} [{m.get('format')}] — {c.get('samples')} samples from {c.get('source')}{synth}"


def _remarks(report: Report) -> list[str]:
    s = report.summary()
    counts = [
        f"{s['dead']} dead of {s['rectifier_units']} rectifier units ({pct(s['dead_fraction'])})"
        if s["rectifier_units"]
        else "",
        f"{s['saturated']} saturated of {s['bounded_units']} bounded units ({pct(s['saturated_fraction'])})"
        if s["bounded_units"]
        else "",
        f"{s['sites']} of {s['activations_found']} activation sites audited",
    ]
    lines = ["; ".join(c for c in counts if c)]
    worst = [v for v in worst_sites(report.sites) if not expected_saturation(v)]
    if worst:
        lines.append("worst sites: " + ", ".join(f"{v.info.name} ({pct(bad_fraction(v))})" for v in worst))
    heads = [v for v in report.sites if expected_saturation(v)]
    if heads:
        lines.append(
            "output heads saturate by design (a bounded activation producing a model output), not ranked: "
            + ", ".join(f"{v.info.name} ({pct(v.saturated_fraction)})" for v in heads[:5])
        )
    lines += [f"not covered: {u.name} ({u.op}): {u.reason}" for u in report.uncovered]
    lines += [gate_line(g) for g in report.gates]
    lines += [f"note: {note}" for note in report.notes]
    lines += [f"warning: {w}" for w in report.warnings]
    lines += [f"next: {step}" for step in report.next_steps()]
    return lines


_FIT_RIGHT = {0, 3, 4, 5, 6, 7}  # right-aligned columns of the narrowed table


def _fitted(report: Report, color: bool, width: int) -> str:
    """The table narrowed to ``width`` columns: short headers, a narrower bar, names elided in the middle."""
    headers = ["#", "site", "kind", "units", "dead", "sat", "rare", "fire", "dead/sat"]
    proven = _has_proof(report)
    right = _FIT_RIGHT
    if proven:
        headers[5:5] = ["weights", "proven", "data-only"]
        right = {0, 3, 4, 5, 6, 7, 8, 9, 10}
    names = [v.info.name for v in report.sites]
    longest = max([len(n) for n in names] + [len("total")])
    lines: list[str] = []
    for bar_width, sep in ((terminal.BAR_WIDTH, "  "), (5, "  "), (5, " "), (0, " ")):
        rows = _rows(report, False, bar_width, proven)
        for r in rows:
            r[1] = ""
        others = layout(headers, rows, sep, right)[
            1
        ]  # the rule line: every column's width, site column 4 wide
        room = width - (len(others) - len("site"))
        if room >= min(longest, terminal.MIN_SITE_WIDTH) or bar_width == 0:
            room = max(room, 5)
            rows = _rows(report, color, bar_width, proven)
            for r, v in zip(rows[:-1], report.sites, strict=True):
                r[1] = terminal.paint(terminal.elide(v.info.name, room), bad_fraction(v), color)
            lines = layout(headers, rows, sep, right)
            break
    out = [*terminal.wrap(_fit_header(report, width), width), *lines]
    for line in _remarks(report):
        out += terminal.wrap(text(line), width)
    return "\n".join(x for x in out if x) + "\n"


def _widest(block: str) -> int:
    return max((len(plain(x)) for x in block.splitlines()), default=0)


def _rows(report: Report, color: bool, bar_width: int, proven: bool) -> list[list[object]]:
    rows = [_row(i, v, True, color, bar_width, proven) for i, v in enumerate(report.sites)]
    return [*rows, _total_row(report, True, proven)]


def _fit_header(report: Report, width: int) -> str:
    """The title line, its model path cut in the middle when it would take more than half the width."""
    line = text(_title(report))
    path = str(report.model.get("path"))
    if len(line) > width and len(path) > width // 2:  # a long path: keep its ends, the file name whole
        line = line.replace(path, terminal.cut_middle(path, width // 2), 1)
    return line
