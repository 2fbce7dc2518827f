"""The SVG charts of the HTML report: dead and saturated fractions along the network, and per-site histograms."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, cast

import numpy as np

from ..jsonform import JSON, members
from ..verdicts import bad_fraction, expected_saturation
from .markup import esc as _e
from .markup import num as _num
from .markup import pct as _pct
from .terminal import elide

if TYPE_CHECKING:
    from ..verdicts import SiteVerdict

HIST_BINS = 10
DEPTH_W, DEPTH_H = 960, 220
DEPTH_LABELS = 110  # extra height for the rotated site names under the depth chart
DEPTH_NAME_CHARS = 22
HIST_W, HIST_H = 230, 96

# y-axis maxima of the depth chart and how many gridline steps each gets (whole percents)
_TICKS = {0.05: 5, 0.1: 5, 0.25: 5, 0.5: 5, 1.0: 4}


def _nice_ceiling(x: float) -> float:
    for c in _TICKS:
        if x <= c:
            return c
    return 1.0


def _frac(s: JSON, key: str) -> float | None:
    """A site's ``dead_fraction`` or ``saturated_fraction`` (``None`` where it has none)."""
    return cast(float | None, s[key])


def depth_chart(d: JSON, verdicts: list[SiteVerdict]) -> str:
    sites = members(d, "sites")
    n = len(sites)
    if n == 0:
        return '<section id="depth"><h2>Along the network</h2><p class="muted">No activation sites.</p></section>'
    left, right, top, bottom = 52, 12, 14, 38 + DEPTH_LABELS
    height = DEPTH_H + DEPTH_LABELS
    pw, ph = DEPTH_W - left - right, height - top - bottom
    worst = max(
        [_frac(s, "dead_fraction") or 0.0 for s in sites]
        + [_frac(s, "saturated_fraction") or 0.0 for s in sites]
    )
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
        frac: float | None = ymax * k / ticks
        y = top + ph - ph * k / ticks
        parts.append(f'<line class="grid" x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{_pct(frac, 0)}</text>')
    label_step = max(1, math.ceil(n / 96))
    font = 11 if n <= 40 else 9 if n <= 70 else 8
    for s, v in zip(sites, verdicts, strict=True):
        i = cast(int, s["index"])
        x0 = left + band * i + (band - 2 * bw) / 2
        tip = f"#{i} {s['name']} ({s['kind']}): "
        for cls, key, shown, x in (
            ("dead", "dead", v.can_die, x0),
            ("sat", "saturated", v.can_saturate, x0 + bw),
        ):
            if not shown:
                continue
            frac = _frac(s, f"{key}_fraction")
            h = ph * (frac or 0.0) / ymax
            parts.append(
                f'<rect class="{cls}" x="{x:.2f}" y="{top + ph - h:.2f}" width="{bw:.2f}" height="{h:.2f}" '
                f'data-index="{i}" data-site="{_e(s["name"])}" data-{key}="{s[key]}" '
                f'data-value="{_num(frac)}">'
                f"<title>{_e(tip)}{s[key]} of {s['units']} {key} ({_pct(frac)})</title></rect>"
            )
        if i % label_step == 0:
            # Names, not only indices: rotated so that 40–80 sites stay readable at the chart's width.
            cx, cy = left + band * (i + 0.5), top + ph + 8
            head = " ⇥" if expected_saturation(v) else ""
            parts.append(
                f'<text class="site-label" x="{cx:.1f}" y="{cy:.1f}" text-anchor="end" font-size="{font}" '
                f'transform="rotate(-60 {cx:.1f} {cy:.1f})" data-index="{i}">'
                f"{_e(elide(cast(str, s['name']), DEPTH_NAME_CHARS))}{head}<title>#{i} {_e(s['name'])}</title></text>"
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


def _histogram(s: JSON, v: SiteVerdict) -> str:
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
    head = "; a model output: saturation is expected" if expected_saturation(v) else ""
    caption = (
        f"<figcaption><b>#{i} {_e(s['name'])}</b> {_e(s['kind'])}, {s['units']} units: "
        f"{len(flagged)} {flag}{note}{head}; x: {label}, y: units</figcaption>"
    )
    return f'<figure id="hist-{i}">' + "".join(parts) + caption + "</figure>"


def histograms(d: JSON, verdicts: list[SiteVerdict]) -> str:
    if not verdicts:
        return ""
    pairs = list(zip(members(d, "sites"), verdicts, strict=True))
    # Worst first, output heads after the problems, healthy sites in execution order last.
    pairs.sort(
        key=lambda p: (
            not bad_fraction(p[1]) or expected_saturation(p[1]),
            expected_saturation(p[1]),
            -bad_fraction(p[1]),
            p[0]["index"],
        )
    )
    figs = [_histogram(s, v) for s, v in pairs]
    return (
        '<section id="distributions"><h2>Per-site distribution of unit fire rates</h2>'
        '<p class="muted">Worst sites first, then model outputs, then healthy sites in execution order. Rectifiers: the share of inputs on which each unit fires; the red bar counts dead '
        "units. Bounded activations (tanh, sigmoid, …): the share of inputs on which a unit is off its flat "
        "tails; the orange bar counts saturated units.</p>"
        '<div class="hists">' + "\n".join(figs) + "</div></section>"
    )
