"""``--mode train`` (the default): recycle where recycling can, deploy slopes where it cannot.

A site whose dead units can be recycled (:mod:`.recycling`: a plain Linear/Conv producer read
only by the activation, a single linear consumer) gets them recycled, with a leaky slope on
the recycled units (``--alpha``, default 0.01) so they keep a gradient below zero; its drift is
zero by construction (float rounding). A site recycling refuses (a batch norm between producer
and activation, a residual add or concat after it, two readers, a grouped-conv consumer, an ONNX
file with external data) gets what ``--mode deploy`` gives: per-unit slopes on its dead units,
cheapest first, with the exact shift, under the drift budget. Both go into one model; the drift
of that model is measured once and is what ``--max-drift`` gates. Each site's ``how`` says
which treatment it got and, for deploy slopes, why it was not recycled.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..edit.drift import Drift
from ..edit.slopes import SlopePlan, SurgeryResult
from ..errors import InputError
from ..verdicts import SiteVerdict
from .recycling import DEFAULT_RECYCLE_SLOPE, RecycleOutcome, recycle_sites
from .report import NO_DEAD_MODEL, SiteRewrite
from .search import SearchResult

TRAIN_MODE = "train"

# unit_search(session, site names, rows) -> an outcome with .search, .final, .plans (core._unit_search)
UnitSearch = Callable[[Any, list[str], dict[str, SiteRewrite]], Any]


def check_train(o: Any) -> None:
    """``--mode train`` writes per-unit slopes with the exact shift or none: refuse the per-site options."""
    if o.mode != TRAIN_MODE:
        return
    bad = [
        flag
        for flag, on in (
            ("--to leaky", o.to == "leaky"),
            ("--slope-units all", o.slope_units == "all"),
            ("--shift fold / --compensate", o.shift == "fold"),
        )
        if on
    ]
    if bad:
        raise InputError(
            f"{', '.join(bad)}: --mode train (the default) recycles dead units and gives per-unit slopes "
            "where it cannot; one slope per site is a deploy choice: add --mode deploy",
            hint="--mode deploy keeps the function with small slopes, for a model you deploy without training",
        )


def recycle_mode(
    s: Any, ok: list[str], rows: dict[str, SiteRewrite], unit_search: UnitSearch
) -> tuple[SearchResult | None, SurgeryResult | None, list[SlopePlan]]:
    """``--mode recycle`` / ``recycle-leaky`` / ``train``: the search result, the variant and its slope plans."""
    o = s.opts
    if o.mode == TRAIN_MODE:
        got = train_sites(s, ok, rows, unit_search)
    else:
        for n in s.by_name:
            rows[n].status, rows[n].how, rows[n].reason = "unchanged", None, None
        slope = (o.alpha or DEFAULT_RECYCLE_SLOPE) if o.mode == "recycle-leaky" else None

        def measure(res: SurgeryResult) -> Drift:
            return s.run_variant(res, None, "recycled variant")

        got = recycle_sites(
            s.surgeon, s.original.source, o.audit.samples, o.audit.seed, s.by_name, rows, slope, measure
        )
        if got.recycled:
            s.ledger.add("recycle: sample new rows", s.original.ref.samples)
    if not got.recycled and not any(v.dead_units for v in s.by_name.values()):
        s.notes.append(NO_DEAD_MODEL)
    return got.search, got.final, got.plans


def train_sites(
    s: Any, ok: list[str], rows: dict[str, SiteRewrite], unit_search: UnitSearch
) -> RecycleOutcome:
    """Recycle every selected site with dead units; deploy slopes on the dead units of those refused.

    ``s``: the rewrite session (core); ``ok``: the sites the slope surgery can rewrite (dry run).
    """
    o = s.opts
    slope = o.alpha or DEFAULT_RECYCLE_SLOPE
    dry = {n: (rows[n].status, rows[n].how, rows[n].reason) for n in s.by_name}
    for n in s.by_name:
        rows[n].status, rows[n].how, rows[n].reason = "unchanged", None, None

    def measure(res: SurgeryResult) -> Drift:
        return s.run_variant(res, None, "trained variant")

    def recycle(sites: dict[str, SiteVerdict], extra: list[SlopePlan] | None) -> RecycleOutcome:
        got = recycle_sites(
            s.surgeon, s.original.source, o.audit.samples, o.audit.seed, sites, rows, slope, measure, extra
        )
        if got.recycled:
            s.ledger.add("recycle: sample new rows", s.original.ref.samples)
        return got

    first = recycle(s.by_name, None)
    refused = {
        n: (rows[n].reason or "not recycled").removeprefix("not recycled: ")
        for n, v in s.by_name.items()
        if v.dead_units and n not in first.recycled
    }
    deploy = [n for n in ok if n in refused]
    for n, why in refused.items():
        status, how, reason = dry[n]
        if n in deploy:
            rows[n].status, rows[n].how, rows[n].reason = status, how, None
        else:
            rows[n].status = "skipped"
            rows[n].reason = f"not recycled: {why}; no slopes either: {reason or 'not rewritten'}"
    if not deploy:
        return first
    out = unit_search(s, deploy, rows)
    _deploy_rows(rows, deploy, refused, o.shift)
    if not first.recycled:
        if out.final is not None:
            out.search.gain_source = "train"
        return RecycleOutcome(out.search, out.final, out.plans, {})
    if not out.plans:  # nothing fits the budget at the refused sites: the recycled model alone
        if first.search is not None:
            first.search.feasible = out.search.feasible
        return first
    again = recycle({n: s.by_name[n] for n in first.recycled}, out.plans)
    if again.search is None or again.final is None:
        return first
    missing = [p.name for p in out.plans if p.name not in again.final.rewritten]
    for n in missing:
        rows[n].status = "skipped"
        rows[
            n
        ].reason = f"not recycled: {refused[n]}; its slopes could not be written beside the recycled units"
    search = out.search
    return RecycleOutcome(
        SearchResult(
            slopes={**again.search.slopes, **{n: a for n, a in search.slopes.items() if n not in missing}},
            drift=again.search.drift,
            feasible=search.feasible,
            gains=search.gains,
            gain_source="train",
            predicted={},
            predicted_total=search.predicted_total,
            steps=search.steps,
        ),
        again.final,
        again.plans,
        again.recycled,
    )


def _deploy_rows(
    rows: dict[str, SiteRewrite], deploy: list[str], refused: dict[str, str], shift: str
) -> None:
    """Say per deploy-treated site which treatment it got and why it was not recycled."""
    for n in deploy:
        r = rows[n]
        if r.status == "rewritten":
            r.how = f"deploy slopes ({shift} shift; not recycled: {refused[n]})"
        elif r.reason:
            r.reason = f"not recycled: {refused[n]}; {r.reason}"
