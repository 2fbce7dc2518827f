"""A self-contained HTML report: inline CSS and inline SVG, no scripts, no network.

Every number comes from ``Report.to_dict()`` (the JSON report), except the per-unit
fire-rate histograms, which read ``SiteVerdict.fire_rate`` so that they work without
``--per-unit``. The document is also well-formed XML, so tests (and users) can parse
it with any XML parser; elements carry ``data-*`` attributes with the raw numbers.
"""

from __future__ import annotations

import json
import math
from html import escape
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ..verdicts import SiteVerdict
    from .audit import Report
    from .baseline import Comparison

HIST_BINS = 10
DEPTH_W, DEPTH_H = 960, 220
DEPTH_LABELS = 110  # extra height for the rotated site names under the depth chart
DEPTH_NAME_CHARS = 22
HIST_W, HIST_H = 230, 96

_CSS = """
:root { --fg: #1d2330; --muted: #5b6475; --bg: #ffffff; --card: #f4f6f9; --line: #d9dee7;
  --dead: #d62728; --sat: #f28e2b; --ok: #4c78a8; --rare: #bcbd22; --pass: #2e7d32; --fail: #c62828; }
@media (prefers-color-scheme: dark) {
  :root { --fg: #e6e9ef; --muted: #9aa3b5; --bg: #161a22; --card: #202633; --line: #343c4d; --ok: #6f9fd8; }
}
* { box-sizing: border-box; }
body { margin: 0; padding: 24px 32px 48px; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif;
  color: var(--fg); background: var(--bg); max-width: 1280px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 32px 0 8px; border-bottom: 1px solid var(--line); padding-bottom: 4px; }
.muted, figcaption { color: var(--muted); }
code, .mono { font-family: ui-monospace, "SF Mono", Menlo, Consolas, monospace; font-size: 12.5px; }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 12px 0; }
dl.meta dt { color: var(--muted); }
dl.meta dd { margin: 0; overflow-wrap: anywhere; }
.banner { padding: 8px 12px; border-radius: 6px; margin: 8px 0; border-left: 4px solid; }
.banner.warn { background: rgba(242, 142, 43, 0.12); border-color: var(--sat); }
.banner.fail { background: rgba(198, 40, 40, 0.10); border-color: var(--fail); }
.banner.pass { background: rgba(46, 125, 50, 0.10); border-color: var(--pass); }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(100px, 1fr)); gap: 10px; margin: 16px 0; }
.card { background: var(--card); border-radius: 8px; padding: 10px 12px; }
.card .v { font-size: 22px; font-weight: 600; }
.card .l { color: var(--muted); font-size: 12px; }
.card.dead .v { color: var(--dead); } .card.sat .v { color: var(--sat); }
.card.zero .v { color: var(--fg); }
svg { display: block; max-width: 100%; height: auto; }
#depth-chart, .hist { width: 100%; }
svg text { fill: var(--muted); font: 11px system-ui, sans-serif; }
svg .grid { stroke: var(--line); stroke-width: 1; }
svg .dead { fill: var(--dead); } svg .sat { fill: var(--sat); } svg .live { fill: var(--ok); }
.legend span { display: inline-block; width: 10px; height: 10px; margin: 0 4px 0 14px; border-radius: 2px; }
.hists { display: grid; grid-template-columns: repeat(auto-fill, minmax(240px, 1fr)); gap: 12px; }
.hists figure { margin: 0; background: var(--card); border-radius: 8px; padding: 8px; }
.hists figcaption { font-size: 12px; overflow-wrap: anywhere; }
.hists figcaption b { color: var(--fg); }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { color: var(--muted); font-weight: 600; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
tr.bad td.name { font-weight: 600; }
tfoot td { font-weight: 600; border-top: 2px solid var(--line); }
.bar { display: inline-block; width: 90px; height: 9px; background: var(--line); border-radius: 2px;
  vertical-align: middle; margin-right: 6px; position: relative; overflow: hidden; }
.bar i { position: absolute; left: 0; top: 0; bottom: 0; }
.bar i.dead { background: var(--dead); } .bar i.sat { background: var(--sat); }
.pass { color: var(--pass); font-weight: 600; } .fail { color: var(--fail); font-weight: 600; }
.tag { font: 11px system-ui, sans-serif; color: var(--muted); border: 1px solid var(--line); border-radius: 3px;
  padding: 0 4px; margin-left: 4px; }
.nowrap { white-space: nowrap; }
td.units { font-size: 11.5px; overflow-wrap: anywhere; max-width: 320px; }
footer { margin-top: 40px; color: var(--muted); font-size: 12px; }
"""


def _elide(name: str, width: int) -> str:
    from .text import elide

    return elide(name, width)


def _is_head(v: SiteVerdict) -> bool:
    from .text import expected_saturation

    return expected_saturation(v)


def _bad(v: SiteVerdict) -> float:
    from .text import bad_fraction

    return bad_fraction(v)


def _units_text(units: list[int], limit: int = 24) -> str:
    shown = ", ".join(map(str, units[:limit]))
    return shown + (f", … ({len(units) - limit} more)" if len(units) > limit else "")


def _e(x: Any) -> str:
    return escape(str(x), quote=True)


def _pct(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f}%"


def _num(x: Any) -> str:
    """A number for a data attribute: the JSON value as JSON writes it."""
    return "" if x is None else json.dumps(x)


def _fmt(x: Any) -> str:
    return "–" if x is None else f"{x:g}"


# y-axis maxima of the depth chart and how many gridline steps each gets (whole percents)
_TICKS = {0.05: 5, 0.1: 5, 0.25: 5, 0.5: 5, 1.0: 4}


def _nice_ceiling(x: float) -> float:
    for c in _TICKS:
        if x <= c:
            return c
    return 1.0


def _header(d: dict[str, Any]) -> str:
    m, c = d["model"], d["calibration"]
    name = m.get("path") or "in-memory model"
    rows = [
        ("model", f"<code>{_e(name)}</code>"),
        ("format", _e(m.get("format"))),
        ("sha256", f"<code>{_e(m.get('sha256') or '–')}</code>"),
        ("calibration", _e(c.get("source"))),
        (
            "samples",
            _samples_text(c) + (f", seed {_e(c['seed'])}" if "seed" in c else ""),
        ),
        ("inputs", ", ".join(_input_text(i) for i in d.get("inputs", [])) or "–"),
    ]
    out = [f"<header><h1>actaudit report: {_e(_short_name(name))}</h1>"]
    out.append('<dl class="meta">' + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows) + "</dl>")
    if c.get("synthetic"):
        out.append(
            '<p class="banner warn" id="synthetic-warning"><b>Synthetic calibration data.</b> '
            "These verdicts describe random inputs, not real data: a unit dead here may fire on real inputs "
            "and the other way round. Audit with <code>--calib</code> or <code>--data-loader</code>.</p>"
        )
    if d["gates"]:
        failed = [g["gate"] for g in d["gates"] if not g["passed"]]
        if failed:
            out.append(f'<p class="banner fail" id="gate-status">Gates failed: {_e(", ".join(failed))}</p>')
        else:
            out.append(f'<p class="banner pass" id="gate-status">All {len(d["gates"])} gates passed.</p>')
    out.append("</header>")
    return "\n".join(out)


def _samples_text(c: dict[str, Any]) -> str:
    """ "128 in 4 batches of 32", or "32 in 32 batches of 1" where the data chose its own batches."""
    samples, batches = c.get("samples") or 0, c.get("batches") or 0
    if not batches:
        return _e(samples)
    per = samples / batches
    size = f"{per:g}" if per == int(per) else f"about {per:.1f}"
    return f"{_e(samples)} in {_e(batches)} batch{'es' if batches != 1 else ''} of {size}"


def _short_name(path: str) -> str:
    return path.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1] or path


def _input_text(i: dict[str, Any]) -> str:
    shape = i.get("shape")
    dims = "?" if shape is None else "×".join(str(x) for x in shape)
    return f"<code>{_e(i.get('name'))}</code> {_e(dims)} {_e(i.get('dtype'))}"


def _cards(d: dict[str, Any]) -> str:
    s = d["summary"]

    def card(key: str, value: Any, label: str, cls: str = "") -> str:
        zero = " zero" if value == 0 else ""
        return (
            f'<div class="card {cls}{zero}" data-key="{key}" data-value="{_num(value)}">'
            f'<div class="v">{_e(value)}</div><div class="l">{label}</div></div>'
        )

    cards = [
        card("sites", s["sites"], "activation sites"),
        card("units", s["units"], "units"),
        card(
            "dead",
            s["dead"],
            f"dead of {s['rectifier_units']} rectifier units ({_pct(s['dead_fraction'])})",
            "dead",
        ),
        card(
            "saturated",
            s["saturated"],
            f"saturated of {s['bounded_units']} bounded units ({_pct(s['saturated_fraction'])})",
            "sat",
        ),
        card("rarely_firing", s["rarely_firing"], f"rarely firing ({_pct(s['rarely_firing_fraction'])})"),
        card("never_positive", s["never_positive"], "never positive (leaky)"),
        card("nonfinite", s["nonfinite"], "non-finite values"),
        card("uncovered", s["uncovered"], "activations not covered"),
    ]
    return '<section id="summary"><div class="cards">' + "".join(cards) + "</div></section>"


def _depth_chart(d: dict[str, Any], verdicts: list[SiteVerdict]) -> str:
    sites = d["sites"]
    n = len(sites)
    if n == 0:
        return '<section id="depth"><h2>Along the network</h2><p class="muted">No activation sites.</p></section>'
    left, right, top, bottom = 52, 12, 14, 38 + DEPTH_LABELS
    height = DEPTH_H + DEPTH_LABELS
    pw, ph = DEPTH_W - left - right, height - top - bottom
    worst = max([s["dead_fraction"] or 0.0 for s in sites] + [s["saturated_fraction"] or 0.0 for s in sites])
    ymax = _nice_ceiling(worst)
    band = pw / n
    bw = max(band * 0.38, 0.6)
    parts = [
        f'<svg id="depth-chart" viewBox="0 0 {DEPTH_W} {height}" '
        f'width="{DEPTH_W}" height="{height}" role="img" data-sites="{n}" data-ymax="{ymax}">',
        "<title>Dead and saturated fraction of units per activation site, in execution order</title>",
    ]
    ticks = _TICKS[ymax]
    for k in range(ticks + 1):
        frac = ymax * k / ticks
        y = top + ph - ph * k / ticks
        parts.append(f'<line class="grid" x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{_pct(frac, 0)}</text>')
    label_step = max(1, math.ceil(n / 96))
    font = 11 if n <= 40 else 9 if n <= 70 else 8
    for s, v in zip(sites, verdicts, strict=True):
        i = s["index"]
        x0 = left + band * i + (band - 2 * bw) / 2
        tip = f"#{i} {s['name']} ({s['kind']}): "
        if v.can_die:
            h = ph * (s["dead_fraction"] or 0.0) / ymax
            parts.append(
                f'<rect class="dead" x="{x0:.2f}" y="{top + ph - h:.2f}" width="{bw:.2f}" height="{h:.2f}" '
                f'data-index="{i}" data-site="{_e(s["name"])}" data-dead="{s["dead"]}" '
                f'data-value="{_num(s["dead_fraction"])}">'
                f"<title>{_e(tip)}{s['dead']} of {s['units']} dead ({_pct(s['dead_fraction'])})</title></rect>"
            )
        if v.can_saturate:
            h = ph * (s["saturated_fraction"] or 0.0) / ymax
            parts.append(
                f'<rect class="sat" x="{x0 + bw:.2f}" y="{top + ph - h:.2f}" width="{bw:.2f}" height="{h:.2f}" '
                f'data-index="{i}" data-site="{_e(s["name"])}" data-saturated="{s["saturated"]}" '
                f'data-value="{_num(s["saturated_fraction"])}">'
                f"<title>{_e(tip)}{s['saturated']} of {s['units']} saturated "
                f"({_pct(s['saturated_fraction'])})</title></rect>"
            )
        if i % label_step == 0:
            # Names, not only indices: rotated so that 40–80 sites stay readable at the chart's width.
            cx, cy = left + band * (i + 0.5), top + ph + 8
            head = " ⇥" if _is_head(v) else ""
            parts.append(
                f'<text class="site-label" x="{cx:.1f}" y="{cy:.1f}" text-anchor="end" font-size="{font}" '
                f'transform="rotate(-60 {cx:.1f} {cy:.1f})" data-index="{i}">'
                f"{_e(_elide(s['name'], DEPTH_NAME_CHARS))}{head}<title>#{i} {_e(s['name'])}</title></text>"
            )
    parts.append(f'<line class="grid" x1="{left}" x2="{left + pw}" y1="{top + ph}" y2="{top + ph}"/>')
    parts.append(
        f'<text x="{left + pw / 2:.1f}" y="{height - 4}" text-anchor="middle">'
        "activation sites in execution order: input → output (⇥ marks a model output)</text>"
    )
    parts.append("</svg>")
    legend = (
        '<p class="legend muted"><span class="swatch" style="background: var(--dead)"></span>dead fraction '
        '(rectifiers)<span class="swatch" style="background: var(--sat)"></span>saturated fraction '
        f"(bounded and capped activations); y axis up to {_pct(ymax, 0)}. Hover a bar for the site.</p>"
    )
    return (
        '<section id="depth"><h2>Dead and saturated units along the network</h2>'
        + legend
        + "\n".join(parts)
        + "</section>"
    )


def _hist_data(v: SiteVerdict) -> tuple[str, str, list[int], int, list[int]]:
    """(metric label, flag label, flagged units, units without data, counts per bin) for one site."""
    if v.can_die:
        values = np.asarray(v.fire_rate, dtype=np.float64)
        flagged, label, flag = v.dead_units, "unit fire rate", "dead"
    else:
        values = 1.0 - np.asarray(v.low_rate, dtype=np.float64) - np.asarray(v.high_rate, dtype=np.float64)
        flagged, label, flag = v.saturated_units, "unit rate off the flat tails", "saturated"
    mask = np.isfinite(values)
    nodata = int((~mask).sum())
    keep = mask.copy()
    keep[np.asarray(flagged, dtype=np.int64)] = False
    counts, _ = np.histogram(np.clip(values[keep], 0.0, 1.0), bins=HIST_BINS, range=(0.0, 1.0))
    return label, flag, list(flagged), nodata, [int(c) for c in counts]


def _histogram(s: dict[str, Any], v: SiteVerdict) -> str:
    label, flag, flagged, nodata, counts = _hist_data(v)
    bars = [len(flagged), *counts]
    top_count = max(max(bars), 1)
    left, bottom, top = 24, 18, 8  # left margin holds the count scale
    pw, ph = HIST_W - left - 6, HIST_H - bottom - top
    gap = 8  # between the flagged bar and the bins
    bw = (pw - gap) / (HIST_BINS + 1)
    i = s["index"]
    parts = [
        f'<svg class="hist" viewBox="0 0 {HIST_W} {HIST_H}" width="{HIST_W}" '
        f'height="{HIST_H}" data-index="{i}" data-site="{_e(s["name"])}" data-units="{s["units"]}" '
        f'data-flag="{flag}" data-flagged="{len(flagged)}" data-nodata="{nodata}" '
        f'data-counts="{" ".join(map(str, counts))}">',
        f"<title>{_e(s['name'])}: distribution of {label} over {s['units']} units</title>",
    ]
    for frac in (0.0, 0.5, 1.0):  # the count scale: 0, half and the tallest bar
        y0 = top + ph - ph * frac
        value = top_count * frac
        text = f"{value:g}" if value == int(value) else f"{value:.1f}"
        parts.append(f'<line class="grid" x1="{left}" x2="{left + pw:.1f}" y1="{y0:.1f}" y2="{y0:.1f}"/>')
        parts.append(
            f'<text class="y-tick" x="{left - 3}" y="{y0 + 3.5:.1f}" text-anchor="end">{text}</text>'
        )
    for b, count in enumerate(bars):
        x = left + b * bw + (gap if b else 0)
        h = ph * count / top_count
        cls = flag if b == 0 else "live"
        cls = "sat" if cls == "saturated" else cls
        what = (
            f"{count} {flag}"
            if b == 0
            else f"{count} units with {label} in [{(b - 1) / 10:.1f}, {b / 10:.1f}"
        )
        what += "" if b == 0 else ("]" if b == HIST_BINS else ")")
        parts.append(
            f'<rect class="{cls}" x="{x + 0.5:.2f}" y="{top + ph - h:.2f}" width="{max(bw - 1, 0.5):.2f}" '
            f'height="{h:.2f}"><title>{_e(what)}</title></rect>'
        )
    y = HIST_H - 5
    parts.append(
        f'<text x="{left + bw / 2:.1f}" y="{y}" text-anchor="middle">{"sat" if flag == "saturated" else flag}</text>'
    )
    parts.append(f'<text x="{left + bw + gap:.1f}" y="{y}">0</text>')
    parts.append(
        f'<text x="{left + gap + bw * (1 + HIST_BINS / 2):.1f}" y="{y}" text-anchor="middle">0.5</text>'
    )
    parts.append(f'<text x="{left + pw:.1f}" y="{y}" text-anchor="end">1</text>')
    parts.append("</svg>")
    note = f", {nodata} without data" if nodata else ""
    head = "; a model output: saturation is expected" if _is_head(v) else ""
    caption = (
        f"<figcaption><b>#{i} {_e(s['name'])}</b> {_e(s['kind'])}, {s['units']} units: "
        f"{len(flagged)} {flag}{note}{head}; x: {label}, y: units</figcaption>"
    )
    return f'<figure id="hist-{i}">' + "".join(parts) + caption + "</figure>"


def _histograms(d: dict[str, Any], verdicts: list[SiteVerdict]) -> str:
    if not verdicts:
        return ""
    pairs = list(zip(d["sites"], verdicts, strict=True))
    # Worst first, output heads after the problems, healthy sites in execution order last.
    pairs.sort(key=lambda p: (not _bad(p[1]) or _is_head(p[1]), _is_head(p[1]), -_bad(p[1]), p[0]["index"]))
    figs = [_histogram(s, v) for s, v in pairs]
    return (
        '<section id="distributions"><h2>Per-site distribution of unit fire rates</h2>'
        '<p class="muted">Worst sites first, then model outputs, then healthy sites in execution order. Rectifiers: the share of inputs on which each unit fires; the red bar counts dead '
        "units. Bounded activations (tanh, sigmoid, …): the share of inputs on which a unit is off its flat "
        "tails; the orange bar counts saturated units.</p>"
        '<div class="hists">' + "\n".join(figs) + "</div></section>"
    )


def _mini_bar(s: dict[str, Any], v: SiteVerdict) -> str:
    """The union of dead and saturated units, coloured by the larger part."""
    dead = s["dead_fraction"] or 0.0
    sat = s["saturated_fraction"] or 0.0
    frac = _bad(v)
    cls = "dead" if dead >= sat else "sat"
    bar = f'<span class="bar"><i class="{cls}" style="width: {100 * frac:.1f}%"></i></span>{_pct(frac)}'
    return f'<span class="nowrap">{bar}</span>'


def _flagged(s: dict[str, Any]) -> str:
    parts = []
    if s["dead_units"]:
        parts.append(
            f'<span class="dead-units" data-units="{" ".join(map(str, s["dead_units"]))}">dead: '
            f"{_e(_units_text(s['dead_units']))}</span>"
        )
    if s["saturated_units"]:
        parts.append(
            f'<span class="saturated-units" data-units="{" ".join(map(str, s["saturated_units"]))}">'
            f"saturated: {_e(_units_text(s['saturated_units']))}</span>"
        )
    return "<br/>".join(parts)


def _worst_first(d: dict[str, Any], verdicts: list[SiteVerdict]) -> str:
    """The sites with dead or saturated units, worst first, with their unit indices: where to look."""
    from .text import worst_sites

    bad = worst_sites(verdicts, n=len(verdicts))
    if not bad:
        return ""
    by_name = {s["name"]: s for s in d["sites"]}
    rows = []
    for rank, v in enumerate(bad, 1):
        s = by_name[v.info.name]
        note = " (model output: expected)" if _is_head(v) else ""
        rows.append(
            f'<tr class="worst" data-rank="{rank}" data-site="{_e(s["name"])}" data-bad="{_num(round(_bad(v), 6))}">'
            f'<td class="n">{rank}</td><td class="mono">#{s["index"]} {_e(s["name"])}{_e(note)}</td>'
            f'<td>{_e(s["kind"])}</td><td class="n">{s["units"]}</td><td>{_mini_bar(s, v)}</td>'
            f'<td class="mono units">{_flagged(s)}</td></tr>'
        )
    return (
        '<section id="worst-first"><h2>Worst first</h2><p class="muted">Sites with dead or saturated units, '
        "by the share of their units that are dead or saturated; model outputs that saturate by design last. "
        "Unit indices are 0-based along the site's unit axis.</p>"
        '<table id="worst-table"><thead><tr><th class="n">rank</th><th>site</th><th>kind</th>'
        '<th class="n">units</th><th>dead / saturated</th><th>unit indices</th></tr></thead><tbody>'
        + "\n".join(rows)
        + "</tbody></table></section>"
    )


def _table(d: dict[str, Any], verdicts: list[SiteVerdict]) -> str:
    head = (
        "<thead><tr><th class=n>#</th><th>site</th><th>op</th><th>kind</th><th class=n>units</th>"
        "<th class=n>dead</th><th class=n>saturated</th><th class=n>rare</th><th class=n>mean fire</th>"
        "<th>dead / saturated</th><th class=n>samples</th><th>dead / saturated unit indices</th></tr></thead>"
    ).replace("class=n", 'class="n"')
    rows = []
    for s, v in zip(d["sites"], verdicts, strict=True):
        bad = " bad" if (s["dead"] or s["saturated"]) else ""
        fire = _pct(s["fire_rate"]["mean"]) if v.can_die else "–"
        tag = ' <span class="tag" title="produces a model output">output</span>' if _is_head(v) else ""
        rows.append(
            f'<tr class="site{bad}" data-index="{s["index"]}" data-site="{_e(s["name"])}" '
            f'data-units="{s["units"]}" data-dead="{s["dead"]}" data-saturated="{s["saturated"]}" '
            f'data-rarely-firing="{s["rarely_firing"]}" data-dead-fraction="{_num(s["dead_fraction"])}" '
            f'data-saturated-fraction="{_num(s["saturated_fraction"])}">'
            f'<td class="n">{s["index"]}</td><td class="name mono">{_e(s["name"])}{tag}</td>'
            f'<td>{_e(s["op"])}</td><td>{_e(s["kind"])}</td><td class="n">{s["units"]}</td>'
            f'<td class="n">{s["dead"] if v.can_die else "–"}</td>'
            f'<td class="n">{s["saturated"] if v.can_saturate else "–"}</td>'
            f'<td class="n">{s["rarely_firing"] if v.can_die else "–"}</td>'
            f'<td class="n">{fire}</td><td>{_mini_bar(s, v)}</td>'
            f'<td class="n">{s["coverage"]["samples"]}</td><td class="mono units">{_flagged(s)}</td></tr>'
        )
    sm = d["summary"]
    foot = (
        f'<tfoot><tr id="totals" data-units="{sm["units"]}" data-dead="{sm["dead"]}" '
        f'data-saturated="{sm["saturated"]}"><td></td><td>total</td><td></td><td></td>'
        f'<td class="n">{sm["units"]}</td><td class="n">{sm["dead"]}</td><td class="n">{sm["saturated"]}</td>'
        f'<td class="n">{sm["rarely_firing"]}</td><td></td><td></td><td></td><td></td></tr></tfoot>'
    )
    from .text import worst_sites

    by_name = {s["name"]: s for s in d["sites"]}
    worst = [v for v in worst_sites(verdicts) if not _is_head(v)]
    worst_text = ""
    if worst:
        worst_text = (
            '<p id="worst">Worst sites: '
            + ", ".join(f"<code>{_e(v.info.name)}</code> ({_pct(_bad(v))})" for v in worst)
            + "</p>"
        )
    heads = [v for v in verdicts if _is_head(v)]
    if heads:
        worst_text += (
            '<p id="heads" class="muted">Model outputs, saturated by design and not ranked: '
            + ", ".join(
                f"<code>{_e(v.info.name)}</code> ({_pct(by_name[v.info.name]['saturated_fraction'])})"
                for v in heads
            )
            + ". A bounded activation that produces a model output (a probability, a score) is meant to "
            "sit near its bounds.</p>"
        )
    return (
        '<section id="sites"><h2>Sites</h2>'
        + worst_text
        + '<table id="site-table">'
        + head
        + "<tbody>"
        + "\n".join(rows)
        + "</tbody>"
        + foot
        + "</table></section>"
    )


def _gates(d: dict[str, Any]) -> str:
    if not d["gates"]:
        return ""
    rows = []
    for g in d["gates"]:
        status = '<span class="pass">passed</span>' if g["passed"] else '<span class="fail">FAILED</span>'
        where = ", ".join(g["failing_sites"][:10]) + (" …" if len(g["failing_sites"]) > 10 else "")
        rows.append(
            f'<tr class="gate" data-gate="{_e(g["gate"])}" data-passed="{str(g["passed"]).lower()}" '
            f'data-value="{_num(g["value"])}"><td><code>{_e(g["gate"])}</code></td><td>{status}</td>'
            f'<td class="n">{_e(_fmt(g["value"]))}</td><td class="mono">{_e(where)}</td></tr>'
        )
    return (
        '<section id="gates"><h2>Gates</h2><table><thead><tr><th>gate</th><th>result</th>'
        '<th class="n">value</th><th>failing sites</th></tr></thead><tbody>'
        + "".join(rows)
        + "</tbody></table></section>"
    )


def _warnings(d: dict[str, Any]) -> str:
    out = []
    if d["warnings"] or d.get("notes"):
        items = "".join(f'<li class="warning">{_e(w)}</li>' for w in d["warnings"])
        items += "".join(f'<li class="note">note: {_e(n)}</li>' for n in d.get("notes", []))
        out.append(f'<section id="warnings"><h2>Warnings</h2><ul>{items}</ul></section>')
    if d["uncovered"]:
        rows = "".join(
            f'<tr class="uncovered"><td class="mono">{_e(u["name"])}</td><td>{_e(u["op"])}</td><td>{_e(u["reason"])}</td></tr>'
            for u in d["uncovered"]
        )
        out.append(
            '<section id="uncovered"><h2>Not covered</h2><table><thead><tr><th>activation</th><th>op</th>'
            f"<th>why</th></tr></thead><tbody>{rows}</tbody></table></section>"
        )
    return "\n".join(out)


def _baseline(c: Comparison | None) -> str:
    if c is None:
        return ""
    rows = []
    for s in c.sites:
        if not (s.new_dead_units or s.revived_units or s.dead_fraction_rise):
            continue
        risen = " bad" if s in c.risen or s.new_dead_units else ""
        rows.append(
            f'<tr class="change{risen}" data-site="{_e(s.name)}" data-new-dead="{len(s.new_dead_units)}" '
            f'data-revived="{len(s.revived_units)}" data-rise="{_num(round(s.dead_fraction_rise, 6))}">'
            f'<td class="name mono">{_e(s.name)}</td><td class="n">{s.baseline_dead} → {s.dead}</td>'
            f'<td class="n">{100 * s.dead_fraction_rise:+.1f}</td>'
            f'<td class="mono">{_e(", ".join(map(str, s.new_dead_units)) or "–")}</td>'
            f'<td class="mono">{_e(", ".join(map(str, s.revived_units)) or "–")}</td></tr>'
        )
    table = (
        '<table><thead><tr><th>site</th><th class="n">dead</th><th class="n">points</th>'
        "<th>newly dead units</th><th>revived units</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
        if rows
        else '<p class="muted">No site changed.</p>'
    )
    extra = []
    if c.added_sites:
        extra.append(f"<li>not in the baseline: {_e(', '.join(c.added_sites))}</li>")
    if c.removed_sites:
        extra.append(f"<li>only in the baseline: {_e(', '.join(c.removed_sites))}</li>")
    extra += [f'<li class="warning">{_e(w)}</li>' for w in c.warnings]
    where = f" <code>{_e(c.path)}</code>" if c.path else ""
    return (
        f'<section id="baseline" data-new-dead="{c.new_dead}" data-revived="{c.revived}">'
        f"<h2>Against the baseline{where}</h2>"
        f"<p>{c.new_dead} newly dead units, {c.revived} revived; {len(c.risen)} sites with a dead fraction "
        f"up by more than {100 * c.max_dead_fraction_rise:g} points.</p>"
        + table
        + (f"<ul>{''.join(extra)}</ul>" if extra else "")
        + "</section>"
    )


def _footer(d: dict[str, Any]) -> str:
    st = d["settings"]
    settings = ", ".join(f"{k.replace('_', '-')} {_e(v)}" for k, v in st.items())
    run = d.get("run") or {}
    versions = ", ".join(f"{k} {_e(v)}" for k, v in (run.get("versions") or {}).items())
    timing = ", ".join(
        f"{k} {v:.2f}" for k, v in (run.get("timings_s") or {}).items() if isinstance(v, (int, float))
    )
    return (
        f"<footer>actaudit {_e(d['tool']['version'])} · report schema {_e(d['schema'])} · settings: {settings}"
        + (f" · {versions}" if versions else "")
        + (f" · timings (s): {_e(timing)}" if timing else "")
        + "</footer>"
    )


def render_html(report: Report, comparison: Comparison | None = None) -> str:
    """The whole report as one HTML document (a string; only the CLI writes files).

    With ``comparison`` (from :func:`actaudit.baseline.compare`), a section lists what
    changed against the baseline; its gates are shown only if they were added to the report.
    """
    d = report.to_dict()
    verdicts = list(report.sites)
    name = d["model"].get("path") or "in-memory model"
    body = "\n".join(
        x
        for x in (
            _header(d),
            _cards(d),
            _gates(d),
            _baseline(comparison),
            _depth_chart(d, verdicts),
            _worst_first(d, verdicts),
            _histograms(d, verdicts),
            _table(d, verdicts),
            _warnings(d),
            _footer(d),
        )
        if x
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8"/>'
        '<meta name="viewport" content="width=device-width, initial-scale=1"/>'
        f'<meta name="generator" content="actaudit {_e(d["tool"]["version"])}"/>'
        f"<title>actaudit: {_e(_short_name(name))}</title>"
        f"<style>{_CSS}</style></head>\n"
        f'<body data-schema="{_e(d["schema"])}" data-passed="{str(d["passed"]).lower()}">\n{body}\n</body></html>\n'
    )
