"""Text renderings of a report. ``render()`` returns a string; only the CLI prints."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tabulate import tabulate

if TYPE_CHECKING:
    from .report import Report
    from .verdicts import SiteVerdict

BAR_WIDTH = 10


def _bar(fraction: float, width: int = BAR_WIDTH) -> str:
    """A fixed-width bar: '█' for the bad fraction, '·' for the rest."""
    filled = round(fraction * width)
    if fraction > 0 and filled == 0:
        filled = 1
    return "█" * filled + "·" * (width - filled)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _paint(text: str, fraction: float, color: bool) -> str:
    if not color or fraction <= 0:
        return text
    import click

    return click.style(text, fg="red" if fraction >= 0.5 else "yellow", bold=fraction >= 0.5)


def _row(i: int, v: SiteVerdict, pretty: bool, color: bool = False, proven: bool = False) -> list[object]:
    bad = max(v.dead_fraction, v.saturated_fraction)
    fr = v.fire_rate
    mean_fire = float(fr[fr == fr].mean()) if fr.size and (fr == fr).any() else None
    row: list[object] = [
        i,
        v.info.name,
        v.info.kind,
        v.info.units,
        len(v.dead_units) if v.can_die else "-",
        len(v.saturated_units) if v.can_saturate else "-",
        len(v.rarely_firing_units) if v.can_die else "-",
        _pct(mean_fire) if v.can_die else "-",
    ]
    if proven:
        row.insert(5, "-" if v.proven_dead_units is None else len(v.proven_dead_units))
    if pretty:
        row.append(_paint(f"{_bar(bad)} {_pct(bad)}", bad, color))
        row[1] = _paint(str(row[1]), bad, color)
    return row


def _table(report: Report, fmt: str, color: bool = False) -> str:
    pretty = fmt == "table"
    headers = ["#", "site", "kind", "units", "dead", "saturated", "rare", "fire"]
    if pretty:
        headers.append("dead/saturated")
    proven = any(v.proven_dead_units is not None for v in report.sites)
    if proven:
        headers.insert(5, "proven dead")
    rows = [_row(i, v, pretty, color, proven) for i, v in enumerate(report.sites)]
    s = report.summary()
    total: list[object] = [
        "",
        "total",
        "",
        s["units"],
        s["dead"],
        s["saturated"],
        s["rarely_firing"],
        "",
    ]
    if proven:
        total.insert(5, sum(len(v.proven_dead_units or []) for v in report.sites))
    if pretty:
        total.append("")
    rows.append(total)
    tablefmt = "github" if fmt == "markdown" else "simple"
    out = [_header(report, fmt), tabulate(rows, headers=headers, tablefmt=tablefmt, disable_numparse=True)]
    out.append(_footer(report, fmt))
    return "\n".join(x for x in out if x) + "\n"


def _header(report: Report, fmt: str) -> str:
    m, c = report.model, report.calibration
    synth = " (synthetic)" if c.get("synthetic") else ""
    line = f"{m.get('path')} [{m.get('format')}] — {c.get('samples')} samples from {c.get('source')}{synth}"
    return f"**{line}**\n" if fmt == "markdown" else line


def _footer(report: Report, fmt: str) -> str:
    s = report.summary()
    lines = [
        f"{s['dead']} dead of {s['rectifier_units']} rectifier units ({_pct(s['dead_fraction'])}); "
        f"{s['saturated']} saturated of {s['bounded_units']} bounded units ({_pct(s['saturated_fraction'])})"
    ]
    worst = sorted(
        (v for v in report.sites if v.dead_units or v.saturated_units),
        key=lambda v: -max(v.dead_fraction, v.saturated_fraction),
    )[:3]
    if worst:
        lines.append(
            "worst sites: "
            + ", ".join(f"{v.info.name} ({_pct(max(v.dead_fraction, v.saturated_fraction))})" for v in worst)
        )
    dead_sites = [v for v in report.sites if v.dead_units]
    if dead_sites:
        n = min(v.stats.samples for v in dead_sites)
        from .verdicts import upper_bound_95

        ub = upper_bound_95(n)
        lines.append(
            f"a unit counted dead never fired on {n} samples: its true firing rate is below "
            f"{_pct(ub)} with 95 % confidence"
        )
    for u in report.uncovered:
        lines.append(f"not covered: {u.name} ({u.op}): {u.reason}")
    for g in report.gates:
        status = "FAILED" if g.failed else "passed"
        where = f" at {', '.join(g.failing_sites[:5])}" if g.failing_sites else ""
        lines.append(f"gate {g.gate.text}: {status} (value {g.value:g}){where}")
    for w in report.warnings:
        lines.append(f"warning: {w}")
    if fmt == "markdown":
        return "\n".join(f"- {x}" for x in lines)
    return "\n".join(lines)


def render(report: Report, fmt: str, *, color: bool = False) -> str:
    """``color`` adds ANSI colours to the table (the CLI sets it on a terminal without NO_COLOR)."""
    if fmt == "json":
        return report.to_json()
    if fmt == "csv":
        from .report import rows_for_csv

        return rows_for_csv(report)
    if fmt in ("table", "markdown"):
        return _table(report, fmt, color and fmt == "table")
    raise ValueError(f"unknown format {fmt!r}")
