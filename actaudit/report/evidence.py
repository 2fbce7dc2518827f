"""Three tiers of evidence that a unit is dead, for an audit run with ``--input-range``.

- *by its weights*: no input at all can lift the pre-activation above the dead threshold
  (interval bounds from an unbounded input);
- *proven over the box*: no input inside the box can (interval bounds, tightened by linear
  relaxations: ``proven_dead_units``; the intervals alone: ``proven_dead_units_interval``);
- *on the data only*: dead on every calibration sample, but not proven for the box.

Each tier is a subset of the next one but the last. Collected here for the JSON, the table
and the HTML, from the lists :func:`actaudit.prune.proofs.attach_proofs` puts on each site.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..jsonform import JSON
from ..verdicts import SiteVerdict
from .markup import esc as _e

TIERS = ("weights", "box_interval", "box_linear", "data", "data_only")


def data_only(v: SiteVerdict) -> list[int]:
    """Units dead on the calibration data that no bound proves dead on the box."""
    proven = set(v.proven_dead_units or [])
    return [u for u in v.dead_units if u not in proven]


def site_evidence(v: SiteVerdict) -> dict[str, object]:
    """The site's proof lists for its JSON (nothing without ``--input-range``)."""
    if v.proven_dead_units is None:
        return {}
    d: dict[str, object] = {}
    if v.dead_by_weights_units is not None:
        d["dead_by_weights_units"] = v.dead_by_weights_units
    if v.proven_dead_units_interval is not None:
        d["proven_dead_units_interval"] = v.proven_dead_units_interval
    d["proven_dead_units"] = v.proven_dead_units
    d["dead_on_data_only_units"] = data_only(v)
    return d


def totals(sites: Sequence[SiteVerdict]) -> dict[str, int] | None:
    """Units per tier over every site, or None when no bounds were asked for."""
    if not any(v.proven_dead_units is not None for v in sites):
        return None
    return {
        "weights": sum(len(v.dead_by_weights_units or []) for v in sites),
        "box_interval": sum(len(v.proven_dead_units_interval or []) for v in sites),
        "box_linear": sum(len(v.proven_dead_units or []) for v in sites),
        "data": sum(len(v.dead_units) for v in sites),
        "data_only": sum(len(data_only(v)) for v in sites if v.proven_dead_units is not None),
    }


HEADERS = ("by weights", "proven dead", "data only")


def cells(v: SiteVerdict) -> list[object]:
    """The table's tier columns for one site: by weights, proven over the box, dead on the data only."""
    if v.proven_dead_units is None:
        return ["-", "-", "-"]
    w = v.dead_by_weights_units
    return ["-" if w is None else len(w), len(v.proven_dead_units), len(data_only(v)) if v.can_die else "-"]


def total_cells(sites: Sequence[SiteVerdict]) -> list[object]:
    t = totals(sites) or {}
    return [t.get("weights", 0), t.get("box_linear", 0), t.get("data_only", 0)]


def evidence_html(d: JSON) -> str:
    """A section with the tiers per site (sites with any dead unit), from the JSON report."""
    tot = d.get("evidence")
    if not isinstance(tot, dict):
        return ""
    listed = d.get("sites")
    sites = [
        s
        for s in (listed if isinstance(listed, list) else [])
        if isinstance(s, dict) and "proven_dead_units" in s
    ]
    rows = []
    for s in sites:
        w, iv = s.get("dead_by_weights_units"), s.get("proven_dead_units_interval")
        lin, dead, only = (
            s["proven_dead_units"],
            s.get("dead_units", []),
            s.get("dead_on_data_only_units", []),
        )
        if not (dead or lin):
            continue
        note = f' title="{_e(str(s["proof_note"]))}"' if s.get("proof_note") else ""
        rows.append(
            f'<tr class="evidence" data-site="{_e(str(s["name"]))}" data-weights="{_d(w)}" '
            f'data-box-interval="{_d(iv)}" data-box-linear="{len(lin)}" data-data="{len(dead)}" '
            f'data-data-only="{len(only)}"{note}>'
            f'<td class="name mono">{_e(str(s["name"]))}</td><td class="n">{s["units"]}</td>'
            f'<td class="n">{_n(w)}</td><td class="n">{_n(iv)}</td><td class="n">{len(lin)}</td>'
            f'<td class="n">{len(dead)}</td><td class="n">{len(only)}</td>'
            f'<td class="mono">{_e(", ".join(map(str, lin[:24])) + (" …" if len(lin) > 24 else "") or "–")}</td></tr>'
        )
    attrs = " ".join(f'data-{k.replace("_", "-")}="{int(tot.get(k, 0))}"' for k in TIERS)
    return (
        f'<section id="evidence" {attrs}><h2>Evidence</h2>'
        f"<p>{int(tot.get('weights', 0))} units dead by their weights alone, {int(tot.get('box_linear', 0))} "
        f"proven dead for every input in the box ({int(tot.get('box_interval', 0))} by interval bounds alone), "
        f"{int(tot.get('data', 0))} dead on the calibration data, {int(tot.get('data_only', 0))} of them on the data "
        "only. A unit proven dead stays dead on any input inside the box; one dead on the data only may fire "
        "on other inputs.</p>"
        '<table><thead><tr><th>site</th><th class="n">units</th><th class="n">by weights</th>'
        '<th class="n">box (interval)</th><th class="n">box (linear)</th><th class="n">dead on data</th>'
        '<th class="n">data only</th><th>proven units</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></section>"
    )


def _n(units: object) -> str:
    return str(len(units)) if isinstance(units, list) else "–"


def _d(units: object) -> str:
    return str(len(units)) if isinstance(units, list) else ""
