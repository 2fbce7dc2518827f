"""Small pieces of the HTML report: escaping, numbers for data attributes, the style sheet."""

from __future__ import annotations

import json
from html import escape

from .draw import pct as _draw_pct


def esc(x: object) -> str:
    return escape(str(x), quote=True)


def pct(x: float | None, digits: int = 1) -> str:
    return _draw_pct(x, digits, none="–")


def num(x: float | str | None) -> str:
    """A number for a data attribute: the JSON value as JSON writes it."""
    return "" if x is None else json.dumps(x)


CSS = """
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
