"""A self-contained HTML report: inline CSS and inline SVG, no scripts, no network.

Every number comes from ``Report.to_dict()`` (the JSON report), except the per-unit
fire-rate histograms, which read ``SiteVerdict.fire_rate`` so that they work without
``--per-unit``. The document is also well-formed XML, so tests (and users) can parse
it with any XML parser; elements carry ``data-*`` attributes with the raw numbers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from ..jsonform import JSON, member, members, number, unit_list
from ..verdicts import bad_fraction, expected_saturation, worst_sites
from .charts import HIST_BINS, depth_chart, histograms
from .evidence import evidence_html
from .ffn import ffn_html
from .markup import CSS
from .markup import esc as _e
from .markup import num as _num
from .markup import pct as _pct

if TYPE_CHECKING:
    from ..verdicts import SiteVerdict
    from .audit import Report
    from .baseline import Comparison

__all__ = ["HIST_BINS", "render_html"]


def _units_text(units: list[int], limit: int = 24) -> str:
    shown = ", ".join(map(str, units[:limit]))
    return shown + (f", … ({len(units) - limit} more)" if len(units) > limit else "")


def _fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:g}"


def _header(d: JSON) -> str:
    m, c = member(d, "model"), member(d, "calibration")
    name = cast(str | None, m.get("path")) or "in-memory model"
    rows = [
        ("model", f"<code>{_e(name)}</code>"),
        ("format", _e(m.get("format"))),
        ("sha256", f"<code>{_e(m.get('sha256') or '–')}</code>"),
        ("calibration", _e(c.get("source"))),
        (
            "samples",
            _samples_text(c) + (f", seed {_e(c['seed'])}" if "seed" in c else ""),
        ),
        ("inputs", ", ".join(_input_text(i) for i in cast(list[JSON], d.get("inputs", []))) or "–"),
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
        failed = [cast(str, g["gate"]) for g in members(d, "gates") if not g["passed"]]
        if failed:
            out.append(f'<p class="banner fail" id="gate-status">Gates failed: {_e(", ".join(failed))}</p>')
        else:
            out.append(
                f'<p class="banner pass" id="gate-status">All {len(members(d, "gates"))} gates passed.</p>'
            )
    out.append("</header>")
    return "\n".join(out)


def _samples_text(c: JSON) -> str:
    """ "128 in 4 batches of 32", or "32 in 32 batches of 1" where the data chose its own batches."""
    samples, batches = cast(int, c.get("samples") or 0), cast(int, c.get("batches") or 0)
    if not batches:
        return _e(samples)
    per = samples / batches
    size = f"{per:g}" if per == int(per) else f"about {per:.1f}"
    return f"{_e(samples)} in {_e(batches)} batch{'es' if batches != 1 else ''} of {size}"


def _short_name(path: str) -> str:
    return path.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1] or path


def _input_text(i: JSON) -> str:
    shape = cast(list[int] | None, i.get("shape"))
    dims = "?" if shape is None else "×".join(str(x) for x in shape)
    return f"<code>{_e(i.get('name'))}</code> {_e(dims)} {_e(i.get('dtype'))}"


def _cards(d: JSON) -> str:
    s = member(d, "summary")

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
            f"dead of {s['rectifier_units']} rectifier units ({_pct(number(s, 'dead_fraction'))})",
            "dead",
        ),
        card(
            "saturated",
            s["saturated"],
            f"saturated of {s['bounded_units']} bounded units ({_pct(number(s, 'saturated_fraction'))})",
            "sat",
        ),
        card(
            "rarely_firing",
            s["rarely_firing"],
            f"rarely firing ({_pct(number(s, 'rarely_firing_fraction'))})",
        ),
        card("never_positive", s["never_positive"], "never positive (leaky)"),
        card("nonfinite", s["nonfinite"], "non-finite values"),
        card("uncovered", s["uncovered"], "activations not covered"),
    ]
    return '<section id="summary"><div class="cards">' + "".join(cards) + "</div></section>"


def _mini_bar(s: JSON, v: SiteVerdict) -> str:
    """The union of dead and saturated units, coloured by the larger part."""
    dead = cast(float | None, s["dead_fraction"]) or 0.0
    sat = cast(float | None, s["saturated_fraction"]) or 0.0
    frac = bad_fraction(v)
    cls = "dead" if dead >= sat else "sat"
    bar = f'<span class="bar"><i class="{cls}" style="width: {100 * frac:.1f}%"></i></span>{_pct(frac)}'
    return f'<span class="nowrap">{bar}</span>'


def _flagged(s: JSON) -> str:
    parts = []
    if s["dead_units"]:
        parts.append(
            f'<span class="dead-units" data-units="{" ".join(map(str, unit_list(s, "dead_units")))}">dead: '
            f"{_e(_units_text(unit_list(s, 'dead_units')))}</span>"
        )
    if s["saturated_units"]:
        parts.append(
            f'<span class="saturated-units" data-units="{" ".join(map(str, unit_list(s, "saturated_units")))}">'
            f"saturated: {_e(_units_text(unit_list(s, 'saturated_units')))}</span>"
        )
    return "<br/>".join(parts)


def _worst_first(d: JSON, verdicts: list[SiteVerdict]) -> str:
    """The sites with dead or saturated units, worst first, with their unit indices: where to look."""
    bad = worst_sites(verdicts, n=len(verdicts))
    if not bad:
        return ""
    by_name = {s["name"]: s for s in members(d, "sites")}
    rows = []
    for rank, v in enumerate(bad, 1):
        s = by_name[v.info.name]
        note = " (model output: expected)" if expected_saturation(v) else ""
        rows.append(
            f'<tr class="worst" data-rank="{rank}" data-site="{_e(s["name"])}" data-bad="{_num(round(bad_fraction(v), 6))}">'
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


def _table(d: JSON, verdicts: list[SiteVerdict]) -> str:
    head = (
        "<thead><tr><th class=n>#</th><th>site</th><th>op</th><th>kind</th><th class=n>units</th>"
        "<th class=n>dead</th><th class=n>saturated</th><th class=n>rare</th><th class=n>mean fire</th>"
        "<th>dead / saturated</th><th class=n>samples</th><th>dead / saturated unit indices</th></tr></thead>"
    ).replace("class=n", 'class="n"')
    rows = []
    for s, v in zip(members(d, "sites"), verdicts, strict=True):
        bad = " bad" if (s["dead"] or s["saturated"]) else ""
        fire = _pct(number(member(s, "fire_rate"), "mean")) if v.can_die else "–"
        tag = (
            ' <span class="tag" title="produces a model output">output</span>'
            if expected_saturation(v)
            else ""
        )
        rows.append(
            f'<tr class="site{bad}" data-index="{s["index"]}" data-site="{_e(s["name"])}" '
            f'data-units="{s["units"]}" data-dead="{s["dead"]}" data-saturated="{s["saturated"]}" '
            f'data-rarely-firing="{s["rarely_firing"]}" data-dead-fraction="{_num(cast(float | None, s["dead_fraction"]))}" '
            f'data-saturated-fraction="{_num(cast(float | None, s["saturated_fraction"]))}">'
            f'<td class="n">{s["index"]}</td><td class="name mono">{_e(s["name"])}{tag}</td>'
            f'<td>{_e(s["op"])}</td><td>{_e(s["kind"])}</td><td class="n">{s["units"]}</td>'
            f'<td class="n">{s["dead"] if v.can_die else "–"}</td>'
            f'<td class="n">{s["saturated"] if v.can_saturate else "–"}</td>'
            f'<td class="n">{s["rarely_firing"] if v.can_die else "–"}</td>'
            f'<td class="n">{fire}</td><td>{_mini_bar(s, v)}</td>'
            f'<td class="n">{member(s, "coverage")["samples"]}</td><td class="mono units">{_flagged(s)}</td></tr>'
        )
    sm = member(d, "summary")
    foot = (
        f'<tfoot><tr id="totals" data-units="{sm["units"]}" data-dead="{sm["dead"]}" '
        f'data-saturated="{sm["saturated"]}"><td></td><td>total</td><td></td><td></td>'
        f'<td class="n">{sm["units"]}</td><td class="n">{sm["dead"]}</td><td class="n">{sm["saturated"]}</td>'
        f'<td class="n">{sm["rarely_firing"]}</td><td></td><td></td><td></td><td></td></tr></tfoot>'
    )
    by_name = {s["name"]: s for s in members(d, "sites")}
    worst = [v for v in worst_sites(verdicts) if not expected_saturation(v)]
    worst_text = ""
    if worst:
        worst_text = (
            '<p id="worst">Worst sites: '
            + ", ".join(f"<code>{_e(v.info.name)}</code> ({_pct(bad_fraction(v))})" for v in worst)
            + "</p>"
        )
    heads = [v for v in verdicts if expected_saturation(v)]
    if heads:
        worst_text += (
            '<p id="heads" class="muted">Model outputs, saturated by design and not ranked: '
            + ", ".join(
                f"<code>{_e(v.info.name)}</code> ({_pct(number(by_name[v.info.name], 'saturated_fraction'))})"
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


def _gates(d: JSON) -> str:
    if not d["gates"]:
        return ""
    rows = []
    for g in members(d, "gates"):
        status = '<span class="pass">passed</span>' if g["passed"] else '<span class="fail">FAILED</span>'
        failing = cast(list[str], g["failing_sites"])
        where = ", ".join(failing[:10]) + (" …" if len(failing) > 10 else "")
        rows.append(
            f'<tr class="gate" data-gate="{_e(g["gate"])}" data-passed="{str(g["passed"]).lower()}" '
            f'data-value="{_num(cast(float | None, g["value"]))}"><td><code>{_e(g["gate"])}</code></td><td>{status}</td>'
            f'<td class="n">{_e(_fmt(cast(float | None, g["value"])))}</td><td class="mono">{_e(where)}</td></tr>'
        )
    return (
        '<section id="gates"><h2>Gates</h2><table><thead><tr><th>gate</th><th>result</th>'
        '<th class="n">value</th><th>failing sites</th></tr></thead><tbody>'
        + "".join(rows)
        + "</tbody></table></section>"
    )


def _warnings(d: JSON) -> str:
    out = []
    if d["warnings"] or d.get("notes"):
        items = "".join(f'<li class="warning">{_e(w)}</li>' for w in cast(list[str], d["warnings"]))
        items += "".join(f'<li class="note">note: {_e(n)}</li>' for n in cast(list[str], d.get("notes", [])))
        out.append(f'<section id="warnings"><h2>Warnings</h2><ul>{items}</ul></section>')
    if d["uncovered"]:
        rows = "".join(
            f'<tr class="uncovered"><td class="mono">{_e(u["name"])}</td><td>{_e(u["op"])}</td><td>{_e(u["reason"])}</td></tr>'
            for u in members(d, "uncovered")
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


def _next_steps(d: JSON) -> str:
    steps = cast(list[str], d.get("next_steps") or [])
    if not steps:
        return ""
    items = "".join(f"<li>{_e(s)}</li>" for s in steps)
    return f'<section id="next-steps"><h2>Next steps</h2><ul>{items}</ul></section>'


def _footer(d: JSON) -> str:
    st = member(d, "settings")
    settings = ", ".join(f"{k.replace('_', '-')} {_e(v)}" for k, v in st.items())
    run = cast(JSON, d.get("run") or {})
    versions = ", ".join(f"{k} {_e(v)}" for k, v in cast(JSON, run.get("versions") or {}).items())
    timing = ", ".join(
        f"{k} {v:.2f}"
        for k, v in cast(JSON, run.get("timings_s") or {}).items()
        if isinstance(v, (int, float))
    )
    return (
        f"<footer>actaudit {_e(member(d, 'tool')['version'])} · report schema {_e(d['schema'])} · settings: {settings}"
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
    name = cast(dict[str, str], d["model"]).get("path") or "in-memory model"
    body = "\n".join(
        x
        for x in (
            _header(d),
            _cards(d),
            _gates(d),
            _baseline(comparison),
            depth_chart(d, verdicts),
            ffn_html(report.ffn),
            _worst_first(d, verdicts),
            histograms(d, verdicts),
            _table(d, verdicts),
            evidence_html(d),
            _warnings(d),
            _next_steps(d),
            _footer(d),
        )
        if x
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8"/>'
        '<meta name="viewport" content="width=device-width, initial-scale=1"/>'
        f'<meta name="generator" content="actaudit {_e(cast(dict[str, str], d["tool"])["version"])}"/>'
        f"<title>actaudit: {_e(_short_name(name))}</title>"
        f"<style>{CSS}</style></head>\n"
        f'<body data-schema="{_e(d["schema"])}" data-passed="{str(d["passed"]).lower()}">\n{body}\n</body></html>\n'
    )
