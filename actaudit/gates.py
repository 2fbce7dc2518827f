"""``--fail-on`` gates: ``[SITE_GLOB:]METRIC OP NUMBER``, e.g. ``dead>0``, ``'encoder.*:dead-fraction>0.5'``.

Without a glob a gate applies to the model's totals; with one, to every matching site
(the gate fails if any matching site violates it). A glob that matches no site is a
usage error: in CI a typo must not pass silently.
"""

from __future__ import annotations

import fnmatch
import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

from .errors import ActauditError
from .naming import former_note

if TYPE_CHECKING:
    from .verdicts import SiteVerdict

METRICS = (
    "dead",
    "dead-fraction",
    "saturated",
    "saturated-fraction",
    "rarely-firing",
    "rarely-firing-fraction",
    "nonfinite",
    "uncovered",
)
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    "<": operator.lt,
}
_GATE_RE = re.compile(
    r"^\s*(?:(?P<glob>.+):)?(?P<metric>[A-Za-z_-]+)\s*(?P<op>>=|<=|==|!=|>|<)\s*(?P<value>[-+0-9.eE]+)\s*$"
)


@dataclass(frozen=True)
class Gate:
    text: str
    metric: str
    op: str
    value: float
    glob: str | None = None


@dataclass
class GateResult:
    gate: Gate
    failed: bool
    value: float  # the model total, or the worst matching site's value
    failing_sites: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {
            "gate": self.gate.text,
            "passed": not self.failed,
            "value": self.value,
            "failing_sites": self.failing_sites,
        }


def parse_gate(text: str) -> Gate:
    m = _GATE_RE.match(text)
    if not m:
        raise ActauditError(
            f"cannot read gate {text!r}",
            hint="write [SITE_GLOB:]METRIC OP NUMBER, e.g. 'dead>0' or 'encoder.*:dead-fraction>0.5'; "
            "metrics: " + ", ".join(METRICS) + "; ops: " + " ".join(_OPS),
        )
    metric = m.group("metric")
    if metric not in METRICS:
        import difflib

        close = difflib.get_close_matches(metric.lower().replace("_", "-"), METRICS, n=1, cutoff=0.6)
        fix = f"did you mean {text.replace(metric, close[0], 1)!r}? " if close else ""
        raise ActauditError(
            f"--fail-on {text!r} names unknown metric {metric!r}",
            hint=fix + "valid metrics: " + ", ".join(METRICS),
        )
    try:
        value = float(m.group("value"))
    except ValueError:
        raise ActauditError(f"gate {text!r}: {m.group('value')!r} is not a number") from None
    if not math.isfinite(value):
        raise ActauditError(f"gate {text!r}: {m.group('value')!r} is not a finite number")
    return Gate(text=text, metric=metric, op=m.group("op"), value=value, glob=m.group("glob"))


def site_metric(v: SiteVerdict, metric: str) -> float:
    return {
        "dead": len(v.dead_units),
        "dead-fraction": v.dead_fraction,
        "saturated": len(v.saturated_units),
        "saturated-fraction": v.saturated_fraction,
        "rarely-firing": len(v.rarely_firing_units),
        "rarely-firing-fraction": v.rarely_firing_fraction,
        "nonfinite": int(v.stats.nonfinite.sum()),
        "uncovered": 0,
    }[metric]


def evaluate(
    gates: list[Gate], sites: list[SiteVerdict], summary: Mapping[str, object], notes: list[str] | None = None
) -> list[GateResult]:
    """Each gate's result. A site glob matches a site's name or its former name (a gate written
    before functional sites were named after their producer); such matches are noted in ``notes``."""
    results = []
    for g in gates:
        test = _OPS[g.op]
        if g.glob is None:
            value = float(cast(float, summary[g.metric.replace("-", "_")]))
            results.append(GateResult(g, bool(test(value, g.value)), value))
            continue
        matched = []
        for v in sites:
            hit, by_former = _glob_hit(g.glob, v)
            if hit:
                matched.append(v)
            if by_former and notes is not None:
                note = former_note(f"gate {g.text!r}", [(v.info.former_name or "", v.info.name)])
                if note and note not in notes:
                    notes.append(note)
        if not matched:
            names = ", ".join(v.info.name for v in sites[:12]) + (" …" if len(sites) > 12 else "")
            raise ActauditError(
                f"gate {g.text!r}: site glob {g.glob!r} matches no site", hint=f"sites are: {names}"
            )
        values = [(v.info.name, site_metric(v, g.metric)) for v in matched]
        failing = [name for name, val in values if test(val, g.value)]
        worst = max(val for _, val in values) if g.op in (">", ">=") else min(val for _, val in values)
        results.append(GateResult(g, bool(failing), float(worst), failing))
    return results


def _glob_hit(glob: str, v: SiteVerdict) -> tuple[bool, bool]:
    """(matched, by the former name only): a gate's glob reads whole names, as it always did."""
    if fnmatch.fnmatchcase(v.info.name, glob):
        return True, False
    former = v.info.former_name
    return (True, True) if former and fnmatch.fnmatchcase(former, glob) else (False, False)


COVERAGE_GATE = "coverage"  # the gate every --fail-on run adds when the audit did not see the whole model


def coverage_result(
    gates: list[Gate], sites: int, uncovered: list[str], allow_uncovered: bool
) -> GateResult | None:
    """The failed ``coverage`` gate of a gated audit that saw nothing, or left activations out.

    A gate such as ``dead>0`` passes on a model none of whose activations were audited: in CI
    that is a model passed unseen. ``allow_uncovered`` (``--allow-uncovered``) accepts both
    (the caller warns instead). A model-wide gate on the ``uncovered`` metric takes charge
    of the uncovered activations; an audit with no site fails whatever the gates.
    """
    if not gates or allow_uncovered:
        return None
    if sites == 0:
        text = f"{COVERAGE_GATE}: no activation site was audited"
    elif uncovered and not any(g.metric == "uncovered" and g.glob is None for g in gates):
        text = f"{COVERAGE_GATE}: {len(uncovered)} of {sites + len(uncovered)} activations not audited"
    else:
        return None
    gate = Gate(text=text, metric="uncovered", op=">", value=0.0)
    return GateResult(gate, True, float(len(uncovered)), list(uncovered))
