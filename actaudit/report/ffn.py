"""The transformer FFN section of an audit report (:mod:`actaudit.ffn`) as a table, and its depth plot."""

from __future__ import annotations

from typing import Any

from ..sanitize import text
from .draw import Block, Table, pct


def ffn_blocks(ffn: dict[str, Any]) -> list[Block]:
    """A blank line, a heading and one row per layer: dead, silent per token and per sequence, cold."""
    share = pct(ffn["hot_share"])
    rows = [
        [
            d["layer"],
            text(d["site"]),
            d["neurons"],
            d["dead"],
            pct(d["dead_fraction"]),
            pct(d["silent_per_token_fraction"]),
            "-" if d["silent_per_sequence_fraction"] is None else pct(d["silent_per_sequence_fraction"]),
            d["cold"],
            "yes" if d["gated"] else "no",
        ]
        for d in ffn["layers"]
    ]
    headers = [
        "layer",
        "FFN site",
        "neurons",
        "dead",
        "dead %",
        "silent/token",
        "silent/seq",
        "cold",
        "gated",
    ]
    return [
        "",
        f"FFN neurons per layer (elements = tokens, no padding; cold = outside the hot set of {share} of firings): "
        f"{ffn['dead']} dead of {ffn['neurons']} ({pct(ffn['dead_fraction'])})",
        "",
        Table(headers, rows),
    ]


FFN_W, FFN_H = 960, 240
_SERIES = (  # key, css class, label
    ("silent_per_token_fraction", "ffn-token", "silent per token"),
    ("silent_per_sequence_fraction", "ffn-seq", "silent per sequence"),
    ("dead_fraction", "ffn-dead", "dead (no token)"),
)
_COLORS = {"ffn-token": "#8fa8c8", "ffn-seq": "#e0a040", "ffn-dead": "#c0392b"}


def ffn_html(ffn: dict[str, Any] | None) -> str:
    """The HTML section: per layer, the fraction of FFN neurons dead, silent per sequence and per token."""
    if not ffn:
        return ""
    from .markup import esc, pct

    layers = ffn["layers"]
    n = len(layers)
    left, right, top, bottom = 52, 12, 14, 34
    pw, ph = FFN_W - left - right, FFN_H - top - bottom
    step = pw / max(n - 1, 1)
    parts = [
        f'<svg id="ffn-chart" viewBox="0 0 {FFN_W} {FFN_H}" width="{FFN_W}" height="{FFN_H}" role="img" '
        f'data-layers="{n}"><title>FFN neurons per layer: dead, silent per sequence, silent per token</title>'
    ]
    for k in range(5):
        y = top + ph - ph * k / 4
        parts.append(f'<line class="grid" x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{pct(k / 4, 0)}</text>')
    for key, cls, label in _SERIES:
        points = [
            (left + step * i, top + ph - ph * (d[key] or 0.0))
            for i, d in enumerate(layers)
            if d[key] is not None
        ]
        if not points:
            continue
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        color = _COLORS[cls]
        parts.append(
            f'<polyline class="{cls}" fill="none" stroke="{color}" stroke-width="2" points="{path}"/>'
        )
        for (x, y), d in zip(points, layers, strict=False):
            parts.append(
                f'<circle class="{cls}" cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{color}" data-layer="{d["layer"]}" '
                f'data-value="{d[key]}"><title>layer {d["layer"]} {esc(d["site"])}: {label} {pct(d[key])}</title></circle>'
            )
    for i, d in enumerate(layers):
        parts.append(
            f'<text x="{left + step * i:.1f}" y="{top + ph + 16}" text-anchor="middle">{d["layer"]}</text>'
        )
    parts.append(
        f'<text x="{left + pw / 2:.1f}" y="{FFN_H - 2}" text-anchor="middle">layer (input → output)</text>'
    )
    parts.append("</svg>")
    legend = "".join(
        f'<span class="swatch" style="background: {_COLORS[cls]}"></span>{label} '
        for _, cls, label in _SERIES
    )
    return (
        '<section id="ffn"><h2>Feed-forward neurons along the depth</h2>'
        f'<p class="legend muted">{legend}— {ffn["dead"]} of {ffn["neurons"]} FFN neurons dead; elements are '
        "tokens, padding excluded.</p>" + "".join(parts) + "</section>"
    )
