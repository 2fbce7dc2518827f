"""The written file checked against the choice: drift re-measured, slopes read back, trainability.

The slopes a rewrite chose are compared with the slopes found in the reloaded file as
multisets of rounded keys (a module called at several sites carries one slope).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..backends.base import Surgery
from ..edit.drift import Drift
from ..edit.slopes import SlopePlan, SurgeryResult, float32_up, split_name
from ..variants import Original, VerificationError, write_verified
from .report import RewriteReport, SiteRewrite

SlopeKey = tuple[float, ...]
# The reloaded file's drift may differ from the in-memory variant's by this fraction of
# the larger of the two drifts and the budget (serialisation, a fresh session).
TOLERANCE = 0.02


def publish(
    surgeon: Surgery,
    final: SurgeryResult,
    drift: Drift,
    original: Original,
    out: Path,
    *,
    force: bool,
    samples: int | None,
    max_drift: float,
    report: RewriteReport,
    notes: list[str],
) -> Drift:
    """Write ``final`` to ``out`` once its reloaded copy reproduces ``drift`` and the chosen slopes."""
    written: list[tuple[str, str, object]] = []

    def check(reloaded: object) -> None:
        written.extend(surgeon.written_slopes(reloaded))
        got = _minus(_flat_slopes(written), _flat_slopes(surgeon.original_slopes()))
        want = sorted(report.expected_slopes)
        if not _same_multiset(got, want):
            raise VerificationError(
                f"the reloaded file's slopes {got[:8]} do not match the chosen ones {want[:8]}; nothing was written"
            )
        if not surgeon.trainable(reloaded) and surgeon.trainable(surgeon.original()):
            notes.append("the reloaded model's parameters are not all trainable, though the input's were")
        frozen = surgeon.frozen_parameters(reloaded)
        if frozen:
            report.warnings.append(
                f"{len(frozen)} parameter(s) in the written file are frozen (requires_grad=False), e.g. "
                f"{', '.join(frozen[:4])}: revived units get a gradient, but frozen weights feeding them will not "
                "train until you unfreeze them (module.requires_grad_(True))"
            )

    expect = drift.rel_l2
    done = write_verified(
        surgeon,
        final.model,
        original,
        out,
        force=force,
        notes=notes,
        rerun=lambda m: surgeon.outputs(m, original.source, samples, None),
        expect=expect,
        tolerance=TOLERANCE * max(expect, max_drift),
        what="rewritten",
        check=check,
    )
    order = [r.name for r in report.sites if r.name in final.rewritten]
    site_of = _file_names(final, [w[0] for w in written], order)
    report.output = {
        **done.output,
        "slopes_in_file": [
            {
                "site": site_of.get(s, s),
                "in_file": s,
                "op": op,
                "slope": slope if not isinstance(slope, list) else f"{len(slope)} per-unit values",
            }
            for s, op, slope in written
        ],
    }
    return done.drift


def _file_names(final: SurgeryResult, names: list[str], order: list[str]) -> dict[str, str]:
    """Each slope node's name in the written file → the audit's site name, so that the report names
    a slope in the file the way ``sites[].name`` does: a split eager ``act#1`` lives in module
    ``act_1``; ONNX nodes are ``actaudit_<Op>_<site name made safe>``; what stays unmatched is paired
    in graph order with the sites in audit ``order`` when the counts agree (TorchScript's inserted
    nodes carry no module scope)."""
    by_path: dict[str, str] = {}
    for site, how in final.rewritten.items():
        path = how.rsplit("→", 1)[1].strip() if "→" in how else split_name(site)[0]
        by_path.setdefault(path, site)
        by_path.setdefault(re.sub(r"[^0-9A-Za-z_]", "_", site), site)
    out: dict[str, str] = {}
    for n in names:
        key = n.split("/", 1)[0] if "/" in n else n
        m = re.fullmatch(r"actaudit_[A-Za-z]+_(.*?)(?:_\d+)?", n)
        found = by_path.get(key) or (by_path.get(m.group(1)) if m else None)
        if found is not None:
            out[n] = found
    rest = [n for n in names if n not in out]
    left = [s for s in order if s not in out.values()]
    if rest and len(rest) == len(left):
        out.update(zip(rest, left, strict=True))
    return out


def expected_slopes(plans: list[SlopePlan], final: SurgeryResult, to: str) -> list[SlopeKey]:
    """One key per rewritten site (a site may be several nodes, or share one: compared as sets)."""
    out = []
    for p in plans:
        if p.name not in final.rewritten:
            continue
        if to == "leaky":
            out.append(_key([p.alpha]))
        elif p.per_unit() or p.exact_shift or p.cap is not None:
            out.append(_key(float32_up(p.slopes() if p.unit_slopes is not None else p.slopes(p.alpha))))
        else:
            out.append(_key(p.slopes(p.alpha)))
    return sorted(out)


def _key(values: object) -> SlopeKey:
    return tuple(float(f"{float(x):.5g}") for x in np.asarray(values, dtype=np.float64).reshape(-1))


def _flat_slopes(written: list[tuple[str, str, object]]) -> list[SlopeKey]:
    """One key per slope-carrying node of a file: its slope(s), rounded."""
    return [
        _key(slope if isinstance(slope, list) else [slope]) for _, _op, slope in written if slope is not None
    ]


def _minus(a: list[SlopeKey], b: list[SlopeKey]) -> list[SlopeKey]:
    """Multiset difference: the slopes the rewrite added (the model may have had leaky units already)."""
    rest = list(a)
    for x in b:
        if x in rest:
            rest.remove(x)
    return sorted(rest)


def _same_multiset(got: list[SlopeKey], want: list[SlopeKey]) -> bool:
    # A module called at several sites with one slope appears once in the file; compare the sets then.
    if got == want:
        return True
    return sorted(set(got)) == sorted(set(want)) and len(got) <= len(want)


def record_shifts(rows: dict[str, SiteRewrite], plans: list[SlopePlan], to: str) -> None:
    """Each rewritten site's shift per unit as written, so that ``apply(module, report)`` is exact."""
    for p in plans:
        r = rows.get(p.name)
        if r is None or r.status != "rewritten":
            continue
        written = np.array([float32_up(p.alpha)]) if to == "leaky" else float32_up(p.slopes())
        sh = p.shift_for(written)
        r.unit_shifts = {int(u): float(sh[u]) for u in np.flatnonzero(sh)} or None
        r.rank = len(p.sample_shape) + 1 if p.sample_shape else 2


def group_passes(by: dict[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in by.items():
        key = k.split(" ", 1)[0] if k.startswith(("probe ", "attribute ", "screen ")) else k
        out[key] = round(out.get(key, 0.0) + v, 3)
    return out
