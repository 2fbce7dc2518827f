"""The rewrite report as one HTML page: the sites, then the α evidence (a log-log chart and its table).

Every name in it comes from the model file: escaped. The chart is inline SVG, no script.
"""

from __future__ import annotations

import math
from typing import cast

from ..jsonform import JSON, member, members
from .markup import CSS
from .markup import esc as _e

W, H, PAD = 420, 220, 40
DASHED = ' stroke-dasharray="6 4"'


def _f(x: object) -> str:
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.4g}"


def _sites(sites: list[JSON], statuses: list[str]) -> str:
    rows = "".join(
        f"<tr><td>{_e(s['name'])}</td><td>{s['units']}</td><td>{s['dead']}</td>"
        f"<td>{s['revived'] if s['status'] == 'rewritten' else '–'}</td>"
        f"<td>{_f(s['alpha_min'])}–{_f(s['alpha'])}</td><td>{_e(st)}</td></tr>"
        for s, st in zip(sites, statuses, strict=True)
    )
    return (
        "<h2>Sites</h2><table><thead><tr><th>site</th><th>units</th><th>dead</th><th>revived</th>"
        f"<th>α</th><th>status</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def _chart(ev: JSON) -> str:
    """Drift against α, log-log: with the shift (solid), without (dashed), the budget (line)."""
    pts = [
        cast(tuple[float, float | None, float | None], (g["alpha"], g["drift_shift"], g["drift_no_shift"]))
        for g in members(ev, "model")
    ]
    budget, grid = float(cast(float, ev["max_drift"])), cast(list[float], ev["grid"])
    ys = [y for _, a, b in pts for y in (a, b) if y is not None and y > 0] + [budget]
    lo, hi = math.log10(min(ys)) - 0.2, math.log10(max(ys)) + 0.2
    ax0, ax1 = math.log10(grid[0]), math.log10(grid[-1])

    def xy(a: float, d: float) -> str:
        x = PAD + (math.log10(a) - ax0) / (ax1 - ax0) * (W - 2 * PAD)
        y = H - PAD - (math.log10(d) - lo) / (hi - lo) * (H - 2 * PAD)
        return f"{x:.1f},{y:.1f}"

    def line(k: int, dash: str) -> str:
        p = " ".join(xy(t[0], cast(float, t[k])) for t in pts if t[k] is not None and cast(float, t[k]) > 0)
        return f'<polyline fill="none" stroke="var(--ok)" stroke-width="2"{dash} points="{p}"/>'

    b0, b1 = xy(grid[0], budget), xy(grid[-1], budget)
    ticks = "".join(
        f'<text x="{xy(a, budget).split(",")[0]}" y="{H - PAD + 16}" font-size="11" '
        f'text-anchor="middle">{a:g}</text>'
        for a in grid
    )
    return (
        f'<svg role="img" aria-label="drift against slope" width="{W}" height="{H}" viewBox="0 0 {W} {H}">'
        f'<polyline fill="none" stroke="var(--fail)" stroke-dasharray="2 3" points="{b0} {b1}"/>'
        f"{line(1, '')}{line(2, DASHED)}{ticks}"
        f'<text x="{PAD}" y="14" font-size="11">relative drift (log): solid with the exact shift, '
        f"dashed without; red: --max-drift {budget:g}</text></svg>"
    )


def _evidence(ev: JSON | None) -> str:
    if not ev or not ev["model"]:
        return ""
    rows = "".join(
        f"<tr><td>{g['alpha']:g}</td><td>{_f(g['drift_shift'])}</td><td>{_f(g['drift_no_shift'])}</td>"
        f"<td>{_f(g['leak_share'])}</td><td>{_f(g['gradient_ratio'])}</td></tr>"
        for g in members(ev, "model")
    )
    return (
        f"<h2>Which α: LeakyReLU(α) on every unit of the rewritten sites</h2>"
        f"<p>Suggested α: <strong>{_f(ev['suggested_alpha'])}</strong> — {_e(ev['why'])}. "
        f"Measured on {ev['samples']} samples ({ev['passes']:g} passes).</p>{_chart(ev)}"
        "<table><thead><tr><th>α</th><th>drift (shift)</th><th>drift (no shift)</th>"
        "<th>leak share</th><th>gradient ratio</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
        "<p>Gradient ratio: a revived unit's expected |∂L/∂z| over a live unit's, α / (p̄ + α(1 − p̄)) with "
        "p̄ the live units' firing fraction. Leak share: α²·Σmin(z,0)² / Σmax(z,0)².</p>"
    )


def render_rewrite_html(d: JSON, statuses: list[str]) -> str:
    """``d``: the report's JSON form; ``statuses``: each site's status cell, in order."""
    title = _e(member(d, "model").get("path") or "in-memory model")
    s = member(d, "summary")
    drift = cast(JSON, s.get("drift_verified") or s.get("drift") or {}).get("relative_l2")
    head = (
        f"<h1>actaudit rewrite: {title}</h1><p>revived {s['revived_units']} of {s['dead_units']} "
        f"dead unit(s); drift {_f(drift)} (budget {member(d, 'options').get('max_drift')}); "
        f"{'passed' if d['passed'] else 'FAILED'}</p>"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"/>'
        f"<title>actaudit rewrite: {title}</title><style>{CSS}</style></head>\n"
        f'<body data-schema="{_e(d["schema"])}">\n{head}{_sites(members(d, "sites"), statuses)}{_evidence(cast(JSON | None, d.get("evidence")))}\n</body></html>\n'
    )
