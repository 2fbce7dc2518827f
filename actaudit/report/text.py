"""Text renderings of a report. ``render()`` returns a string; only the CLI prints."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from tabulate import tabulate

from ..sanitize import text

if TYPE_CHECKING:
    from ..verdicts import SiteVerdict
    from .audit import Report

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


def bad_fraction(v: SiteVerdict) -> float:
    """Fraction of a site's units that are dead or saturated (their union, not the larger of the two)."""
    if not v.info.units:
        return 0.0
    return len(set(v.dead_units) | set(v.saturated_units)) / v.info.units


def expected_saturation(v: SiteVerdict) -> bool:
    """A bounded activation that produces a model output (a probability or score head) saturates by design."""
    return bool(getattr(v.info, "model_output", False)) and bool(v.saturated_units) and not v.dead_units


def worst_sites(sites: list[SiteVerdict], n: int = 3) -> list[SiteVerdict]:
    """Sites with dead or saturated units, worst first; output heads saturating by design come last."""
    bad = [v for v in sites if v.dead_units or v.saturated_units]
    return sorted(bad, key=lambda v: (expected_saturation(v), -bad_fraction(v)))[:n]


def _row(
    i: int,
    v: SiteVerdict,
    pretty: bool,
    color: bool = False,
    bar_width: int = BAR_WIDTH,
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
        _pct(mean_fire) if v.can_die else "-",
    ]
    if proven:
        row.insert(5, "-" if v.proven_dead_units is None else len(v.proven_dead_units))
    if pretty:
        cell = f"{_bar(bad, bar_width)} {_pct(bad)}" if bar_width else _pct(bad)
        row.append(_paint(cell, bad, color))
        row[1] = _paint(str(row[1]), bad, color)
    return row


def _total_row(report: Report, pretty: bool, proven: bool = False) -> list[object]:
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
    return total


def _table(report: Report, fmt: str, color: bool = False, width: int | None = None) -> str:
    pretty = fmt == "table"
    headers = ["#", "site", "kind", "units", "dead", "saturated", "rare", "fire"]
    if pretty:
        headers.append("dead/saturated")
    proven = any(v.proven_dead_units is not None for v in report.sites)
    if proven:
        headers.insert(5, "proven dead")
    rows = [_row(i, v, pretty, color, proven=proven) for i, v in enumerate(report.sites)]
    rows.append(_total_row(report, pretty, proven))
    if pretty and width is not None:
        full = tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True)
        if max((len(_plain(x)) for x in full.splitlines()), default=0) > width:
            return _fitted(report, color, width)
    tablefmt = "github" if fmt == "markdown" else "simple"
    out = [_header(report, fmt), tabulate(rows, headers=headers, tablefmt=tablefmt, disable_numparse=True)]
    out.append(_footer(report, fmt))
    return "\n".join(x for x in out if x) + "\n"


def _header(report: Report, fmt: str) -> str:
    m, c = report.model, report.calibration
    synth = " (synthetic)" if c.get("synthetic") else ""
    line = f"{m.get('path')} [{m.get('format')}] — {c.get('samples')} samples from {c.get('source')}{synth}"
    line = text(line)
    return f"**{line}**\n" if fmt == "markdown" else line


def _footer(report: Report, fmt: str) -> str:
    s = report.summary()
    lines = [
        f"{s['dead']} dead of {s['rectifier_units']} rectifier units ({_pct(s['dead_fraction'])}); "
        f"{s['saturated']} saturated of {s['bounded_units']} bounded units ({_pct(s['saturated_fraction'])})"
    ]
    worst = [v for v in worst_sites(report.sites) if not expected_saturation(v)]
    if worst:
        lines.append("worst sites: " + ", ".join(f"{v.info.name} ({_pct(bad_fraction(v))})" for v in worst))
    heads = [v for v in report.sites if expected_saturation(v)]
    if heads:
        lines.append(
            "output heads saturate by design (a bounded activation producing a model output), not ranked: "
            + ", ".join(f"{v.info.name} ({_pct(v.saturated_fraction)})" for v in heads[:5])
        )
    dead_sites = [v for v in report.sites if v.dead_units]
    if dead_sites:
        n = min(v.stats.samples for v in dead_sites)
        from ..verdicts import upper_bound_95

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
    for note in report.notes:
        lines.append(f"note: {note}")
    for w in report.warnings:
        lines.append(f"warning: {w}")
    lines = [text(x) for x in lines]
    if fmt == "markdown":
        return "\n".join(f"- {x}" for x in lines)
    return "\n".join(lines)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
MIN_SITE_WIDTH = 12


def _plain(text: str) -> str:
    return _ANSI.sub("", text)


def elide(name: str, width: int) -> str:
    """``name`` cut to ``width`` characters, keeping what tells sites apart.

    Module paths first lose the letters of their inner components (``encoder.layers.3.act``
    → ``e.l.3.act``: indices and the last component stay), then the middle of what is left.
    """
    if len(name) <= width:
        return name
    parts = re.split(r"([./])", name)
    words = [i for i in range(0, len(parts) - 1, 2) if parts[i] and not parts[i].isdigit()]
    for i in words:  # left to right: the outer scopes are the least specific
        parts[i] = parts[i][0]
        if len("".join(parts)) <= width:
            return "".join(parts)
    short = "".join(parts)
    prefix = "".join(parts[:-1])
    if len(prefix) + 4 <= width:
        return prefix + _cut_middle(parts[-1], width - len(prefix))
    return _cut_middle(short if len(short) < len(name) else name, width)


def _cut_middle(text: str, width: int) -> str:
    if len(text) <= width:
        return text
    if width <= 1:
        return text[:width]
    head = width // 2
    tail = width - 1 - head
    return text[:head] + "…" + (text[-tail:] if tail else "")


def _layout(headers: list[str], rows: list[list[object]], sep: str) -> list[str]:
    """A plain table (tabulate's "simple" look, without its header padding): numbers right, text left."""
    cells = [[str(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(_plain(r[j])) for r in cells]) for j, h in enumerate(headers)]
    right = {0, 3, 4, 5, 6, 7}

    def fmt(r: list[str]) -> str:
        out = []
        for j, c in enumerate(r):
            pad = " " * (widths[j] - len(_plain(c)))
            out.append(pad + c if j in right else c + pad)
        return sep.join(out).rstrip()

    return [fmt(headers), sep.join("-" * w for w in widths), *(fmt(r) for r in cells)]


def _fitted(report: Report, color: bool, width: int) -> str:
    """The table narrowed to ``width`` columns: short headers, a narrower bar, names elided in the middle."""
    headers = ["#", "site", "kind", "units", "dead", "sat", "rare", "fire", "dead/sat"]
    proven = any(v.proven_dead_units is not None for v in report.sites)
    if proven:
        headers.insert(5, "proven")
    names = [v.info.name for v in report.sites]
    longest = max([len(n) for n in names] + [len("total")])
    lines: list[str] = []
    for bar_width, sep in ((BAR_WIDTH, "  "), (5, "  "), (5, " "), (0, " ")):
        rows = [_row(i, v, True, False, bar_width, proven) for i, v in enumerate(report.sites)]
        rows.append(_total_row(report, True, proven))
        for r in rows:
            r[1] = ""
        others = _layout(headers, rows, sep)[1]  # the rule line: every column's width, site column 4 wide
        room = width - (len(others) - len("site"))
        if room >= min(longest, MIN_SITE_WIDTH) or bar_width == 0:
            room = max(room, 5)
            rows = [_row(i, v, True, color, bar_width, proven) for i, v in enumerate(report.sites)]
            rows.append(_total_row(report, True, proven))
            for r, v in zip(rows[:-1], report.sites, strict=True):
                text = elide(v.info.name, room)
                r[1] = _paint(text, bad_fraction(v), color)
            lines = _layout(headers, rows, sep)
            break
    out = [*_wrap(_fit_header(report, width), width), *lines]
    for line in _footer(report, "table").splitlines():
        out += _wrap(line, width)
    return "\n".join(x for x in out if x) + "\n"


def _fit_header(report: Report, width: int) -> str:
    """The title line, its model path cut in the middle when it would take more than half the width."""
    line = _header(report, "table")
    path = str(report.model.get("path"))
    if len(line) > width and len(path) > width // 2:  # a long path: keep its ends, the file name whole
        line = line.replace(path, _cut_middle(path, width // 2), 1)
    return line


def _wrap(line: str, width: int) -> list[str]:
    import textwrap

    if len(line) <= width:
        return [line]
    return textwrap.wrap(line, width, subsequent_indent="  ", break_on_hyphens=False) or [line]


def table_width(wide: bool, to_file: bool) -> int | None:
    """The width the table must fit: the terminal's (``COLUMNS`` first) when stdout is one, else none."""
    import shutil
    import sys

    if wide or to_file:
        return None
    try:
        tty = sys.stdout.isatty()
    except (AttributeError, ValueError):
        tty = False
    if not tty:
        return None
    return max(shutil.get_terminal_size((80, 24)).columns, 40)


def render(report: Report, fmt: str, *, color: bool = False, width: int | None = None) -> str:
    """``color`` adds ANSI colours to the table (the CLI sets it on a terminal without NO_COLOR).

    ``width`` fits the table into that many columns (the CLI passes the terminal's); ``None``
    gives the full table, as files and pipes get it.
    """
    if fmt == "json":
        return report.to_json()
    if fmt == "csv":
        from .audit import rows_for_csv

        return rows_for_csv(report)
    if fmt in ("table", "markdown"):
        return _table(report, fmt, color and fmt == "table", width)
    raise ValueError(f"unknown format {fmt!r}")
