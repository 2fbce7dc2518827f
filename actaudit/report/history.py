"""The history of a training run (``actaudit.history/1``) as table, markdown, CSV, JSON and HTML.

Everything reads the JSON form (:meth:`actaudit.history.History.to_dict`), so a history file
written by the training callback renders exactly as one written by ``actaudit history``.
The CSV is long ("tidy"): one row per checkpoint and site, for notebooks and CI.
"""

from __future__ import annotations

from typing import cast

from ..jsonform import JSON, member, members
from .draw import NO_VALUE, Document, Lines, Table, capped, pct, to_json
from .draw import render as draw_render
from .markup import CSS
from .markup import esc as _e

CHART_W, CHART_H = 960, 260
_PALETTE = ("#c0392b", "#2471a3", "#1e8449", "#b9770e", "#7d3c98", "#117a65", "#884ea0", "#5d6d7e")

__all__ = ["render", "render_html"]


class _Result:
    def __init__(self, d: JSON) -> None:
        self.d = d

    def to_dict(self) -> JSON:
        return self.d

    def document(self) -> Document:
        return document(self.d)


def render(d: JSON, fmt: str) -> str:
    if fmt == "json":
        return to_json(d)
    return draw_render(_Result(d), fmt)


def _series(s: JSON, key: str) -> list[float | None]:
    """A site's fractions, one per checkpoint (``None`` where the checkpoint lacks the site)."""
    return cast(list[float | None], s[key])


def _frac(x: float | None) -> str:
    return NO_VALUE if x is None else pct(x, 2)


def _long_rows(d: JSON) -> list[list[object]]:
    rows: list[list[object]] = []
    for k, c in enumerate(members(d, "checkpoints")):
        for s in members(d, "sites"):
            df, sf = _series(s, "dead_fraction")[k], _series(s, "saturated_fraction")[k]
            if df is None and sf is None:
                continue
            rows.append([k, c["label"], s["name"], s["kind"], s["units"], _frac(df), _frac(sf)])
    return rows


def _csv_rows(d: JSON) -> list[list[object]]:
    rows: list[list[object]] = []
    for k, c in enumerate(members(d, "checkpoints")):
        for s in members(d, "sites"):
            df, sf = _series(s, "dead_fraction")[k], _series(s, "saturated_fraction")[k]
            if df is None and sf is None:
                continue
            cell = [NO_VALUE if x is None else repr(x) for x in (df, sf)]
            rows.append([k, c["label"], s["name"], s["kind"], s["units"], *cell])
    return rows


def _unit_rows(d: JSON) -> list[list[object]]:
    return [
        [
            u["site"],
            u["unit"],
            capped(cast(list[str], u["died"]), 4) or NO_VALUE,
            capped(cast(list[str], u["revived"]), 4) or NO_VALUE,
            "dead" if u["dead_now"] else "alive",
        ]
        for u in members(d, "units")
        if u["died"] or u["revived"]
    ]


def document(d: JSON) -> Document:
    heads = ["#", "checkpoint", "site", "kind", "units", "dead", "saturated"]
    totals = Table(
        ["#", "checkpoint", "samples", "dead units", "dead", "saturated units", "saturated"],
        [
            [
                k,
                c["label"],
                c["samples"],
                c["dead"],
                pct(cast(float | None, c["dead_fraction"]), 2),
                c["saturated"],
                pct(cast(float | None, c["saturated_fraction"]), 2),
            ]
            for k, c in enumerate(members(d, "checkpoints"))
        ],
    )
    units = Table(
        ["site", "unit", "died at", "revived at", "at the end"],
        _unit_rows(d),
        empty="No unit died or revived over these checkpoints.",
    )
    n = len(members(d, "checkpoints"))
    return Document(
        f"actaudit history: {n} checkpoint{'s' if n != 1 else ''}, {len(members(d, 'sites'))} sites",
        [totals, "", Table(heads, _long_rows(d)), "", units, Lines(list(cast(list[str], d["warnings"])))],
        Table(
            ["index", "checkpoint", "site", "kind", "units", "dead_fraction", "saturated_fraction"],
            _csv_rows(d),
        ),
    )


def _series_chart(d: JSON, key: str, title: str) -> str:
    """One line per site (fraction against checkpoint index); sites that never change are left out."""
    labels = [cast(str, c["label"]) for c in members(d, "checkpoints")]
    series = [
        (s["name"], _series(s, key))
        for s in members(d, "sites")
        if any(x for x in _series(s, key) if x is not None)
    ]
    if not series:
        return (
            f'<section id="{key}"><h2>{_e(title)}</h2><p class="muted">None at any checkpoint.</p></section>'
        )
    x0, y0, w, h = 60, 20, CHART_W - 80, CHART_H - 70
    top = min(1.0, max(0.001, 1.15 * max(x for _, ys in series for x in ys if x is not None)))
    n = max(1, len(labels) - 1)

    def px(k: int) -> float:
        return x0 + w * k / n

    def py(f: float) -> float:
        return y0 + h * (1 - f / top)

    parts = [
        f'<svg viewBox="0 0 {CHART_W} {CHART_H}" role="img" aria-label="{_e(title)}" width="100%">',
        f'<line x1="{x0}" y1="{y0 + h}" x2="{x0 + w}" y2="{y0 + h}" stroke="#888"/>',
        f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y0 + h}" stroke="#888"/>',
        f'<text x="{x0 - 6}" y="{y0 + 4}" text-anchor="end" font-size="11">{_axis(top)}</text>',
        f'<text x="{x0 - 6}" y="{y0 + h}" text-anchor="end" font-size="11">0%</text>',
    ]
    step = max(1, len(labels) // 12)
    for k in range(0, len(labels), step):
        parts.append(
            f'<text x="{px(k):.1f}" y="{y0 + h + 16}" text-anchor="middle" font-size="11">{_e(labels[k][-14:])}</text>'
        )
    for i, (name, ys) in enumerate(series):
        color = _PALETTE[i % len(_PALETTE)]
        pts = " ".join(f"{px(k):.1f},{py(f):.1f}" for k, f in enumerate(ys) if f is not None)
        parts.append(
            f'<polyline data-site="{_e(name)}" data-values="{_e(",".join("" if f is None else repr(f) for f in ys))}" '
            f'fill="none" stroke="{color}" stroke-width="2" points="{pts}"><title>{_e(name)}</title></polyline>'
        )
    legend = "".join(
        f'<li><span style="color:{_PALETTE[i % len(_PALETTE)]}">&#9632;</span> {_e(name)}</li>'
        for i, (name, _) in enumerate(series)
    )
    return f'<section id="{key}"><h2>{_e(title)}</h2>{"".join(parts)}</svg><ul class="legend" style="list-style:none">{legend}</ul></section>'


def _axis(top: float) -> str:
    """The y-axis maximum as a percent with as many decimals as a small maximum needs."""
    digits = 0 if top >= 0.1 else 1 if top >= 0.01 else 2
    return f"{100 * top:.{digits}f}%"


def _html_table(t: Table) -> str:
    if not t.rows:
        return f'<p class="muted">{_e(t.empty or "")}</p>'
    head = "".join(f"<th>{_e(h)}</th>" for h in t.headers)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in t.rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(d: JSON) -> str:
    """The history as one self-contained HTML page: the fractions over training, then the tables."""
    doc = document(d)
    tables = [b for b in doc.body if isinstance(b, Table)]
    warn = "".join(f"<li>{_e(w)}</li>" for w in cast(list[str], d["warnings"]))
    body = "\n".join(
        [
            f"<header><h1>{_e(doc.title)}</h1></header>",
            _series_chart(d, "dead_fraction", "Dead fraction over training"),
            _series_chart(d, "saturated_fraction", "Saturated fraction over training"),
            '<section id="checkpoints"><h2>Checkpoints</h2>' + _html_table(tables[0]) + "</section>",
            '<section id="units"><h2>Units that died or revived</h2>' + _html_table(tables[2]) + "</section>",
            f'<section id="warnings"><h2>Warnings</h2><ul>{warn}</ul></section>' if warn else "",
            f"<footer>actaudit {_e(member(d, 'tool')['version'])} · schema {_e(d['schema'])}</footer>",
        ]
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"/>'
        f"<title>{_e(doc.title)}</title><style>{CSS}</style></head>\n"
        f'<body data-schema="{_e(d["schema"])}">\n{body}\n</body></html>\n'
    )
