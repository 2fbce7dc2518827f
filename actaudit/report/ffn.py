"""The transformer view of an audit: per layer, how many feed-forward neurons are dead, silent or cold.

Elements are tokens (text batches carry no padding). For each FFN activation site:

- ``dead``: neurons that fired on no token at all;
- ``silent_per_token``: the mean number of neurons that do not fire on a token (activation
  sparsity as relufication papers report it), from the per-unit fire rates;
- ``silent_per_sequence``: the mean number of neurons that fire on no token of a sequence,
  counted by the backend per sequence in the same pass; dead ≤ per sequence ≤ per token;
- ``cold``: neurons outside the hot set, the fewest neurons that account for ``hot_share``
  of all firings of the layer (what hot/cold offloading such as PowerInfer keeps on the GPU),
  with fire-rate quantiles.

Gated MLPs (``down(act(gate(x)) * up(x))``) have one unit per intermediate neuron, with the
activation of its gate.

:func:`ffn_profile` builds the report's ``ffn`` section; :func:`ffn_blocks` draws it as a table and
:func:`ffn_html` as a depth plot.
"""

from __future__ import annotations

from typing import Literal, TypedDict

import numpy as np

from ..jsonform import json_float as _r
from ..sanitize import text
from ..stats import FfnLayer
from ..verdicts import SiteVerdict
from .draw import Block, Table, pct

DEFAULT_HOT_SHARE = 0.8


class FfnRow(TypedDict):
    """One layer of the report's ``ffn`` section."""

    layer: int
    site: str
    kind: str
    gated: bool
    neurons: int
    tokens: int
    sequences: int
    dead: int
    dead_fraction: float | None
    silent_per_token: float | None
    silent_per_token_fraction: float | None
    silent_per_sequence: float | None
    silent_per_sequence_fraction: float | None
    cold: int
    fire_rate_quantiles: dict[str, float | None]


class FfnSection(TypedDict):
    """The report's ``ffn`` section: a transformer's FFN neurons, per layer."""

    hot_share: float
    neurons: int
    dead: int
    dead_fraction: float | None
    layers: list[FfnRow]


_QUANTILES = (0.1, 0.5, 0.9)


def ffn_profile(
    sites: list[SiteVerdict], layout: dict[str, FfnLayer], hot_share: float = DEFAULT_HOT_SHARE
) -> FfnSection | None:
    """The ``ffn`` section of a report, or None when no site is a layer's FFN activation."""
    layers = []
    for v in sites:
        entry = layout.get(v.info.module)
        if entry is None or v.stats.elements == 0:
            continue
        layers.append(_layer(v, entry, hot_share))
    if not layers:
        return None
    layers.sort(key=lambda d: (d["layer"], d["site"]))
    neurons = sum(d["neurons"] for d in layers)
    dead = sum(d["dead"] for d in layers)
    return {
        "hot_share": hot_share,
        "neurons": neurons,
        "dead": dead,
        "dead_fraction": _r(dead / neurons) if neurons else 0.0,
        "layers": layers,
    }


def _layer(v: SiteVerdict, entry: FfnLayer, hot_share: float) -> FfnRow:
    n = v.info.units
    tokens = int(v.stats.elements)
    rate = np.nan_to_num(np.asarray(v.fire_rate, dtype=np.float64))
    sequences = int(entry.get("sequences", 0))
    per_token = float(n - rate.sum())
    per_sequence = entry["silent_sequence_neurons"] / sequences if sequences else None
    return {
        "layer": entry["layer"],
        "site": v.info.name,
        "kind": v.info.kind,
        "gated": bool(entry.get("gated")),
        "neurons": n,
        "tokens": tokens,
        "sequences": sequences,
        "dead": len(v.dead_units),
        "dead_fraction": _r(len(v.dead_units) / n) if n else 0.0,
        "silent_per_token": _r(per_token),
        "silent_per_token_fraction": _r(per_token / n) if n else 0.0,
        "silent_per_sequence": None if per_sequence is None else _r(per_sequence),
        "silent_per_sequence_fraction": None if per_sequence is None or not n else _r(per_sequence / n),
        "cold": n - hot_count(rate, hot_share),
        "fire_rate_quantiles": {f"p{int(q * 100)}": _r(float(np.quantile(rate, q))) for q in _QUANTILES},
    }


def hot_count(rate: np.ndarray, share: float) -> int:
    """The fewest neurons whose firings add up to ``share`` of all firings (0 when none fired)."""
    total = float(rate.sum())
    if total <= 0:
        return 0
    ordered = np.cumsum(np.sort(rate)[::-1])
    return int(np.searchsorted(ordered, share * total - 1e-12 * total) + 1)


def ffn_blocks(ffn: FfnSection) -> list[Block]:
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
_Series = Literal["silent_per_token_fraction", "silent_per_sequence_fraction", "dead_fraction"]
_SERIES: tuple[tuple[_Series, str, str], ...] = (  # key, css class, label
    ("silent_per_token_fraction", "ffn-token", "silent per token"),
    ("silent_per_sequence_fraction", "ffn-seq", "silent per sequence"),
    ("dead_fraction", "ffn-dead", "dead (no token)"),
)
_COLORS = {"ffn-token": "#8fa8c8", "ffn-seq": "#e0a040", "ffn-dead": "#c0392b"}


def ffn_html(ffn: FfnSection | None) -> str:
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
