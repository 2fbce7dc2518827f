"""What to do about what an audit found: one line per finding kind, with commands for this model.

The commands name the model's actual path and calibration data (``Report.invocation``, set
by the command line; a library call falls back to the report's own model path and data
source). Every line starts with its finding kind (``dead:``, ``coverage:``, ...) so that a
JSON consumer can pick lines by kind from ``next_steps``.
"""

from __future__ import annotations

import math
import shlex
from pathlib import Path
from typing import Any

from ..verdicts import expected_saturation, upper_bound_95

Report = Any  # an actaudit.report.audit.Report (not imported: report.audit imports this module)

# The firing rate below which users usually want "dead" to hold, for the rule-of-three line.
TARGET_RATE = 0.001

__all__ = ["next_steps"]


def _q(x: object) -> str:
    return shlex.quote(str(x))


def _model_flags(report: Report) -> tuple[str, str, str] | None:
    """(model path, data flags, the output path beside the model's suffix) or None for an in-memory model."""
    inv: dict[str, Any] = report.invocation or {}
    path = inv.get("model") or report.model.get("path")
    if not path:
        return None
    flags = []
    if inv.get("arch"):
        flags.append(f"--arch {_q(inv['arch'])}")
    if inv.get("calib"):
        flags.append(f"--calib {_q(inv['calib'])}")
    elif inv.get("data_loader"):
        flags.append(f"--data-loader {_q(inv['data_loader'])}")
    elif not report.calibration.get("synthetic") and report.calibration.get("source") and not inv:
        flags.append(f"--calib {_q(report.calibration['source'])}")
    else:
        flags.append("--calib DATA")
    p = Path(str(path))
    suffix = p.suffix if p.suffix in (".onnx", ".pt2", ".ts") else ".ts"
    return str(path), " ".join(flags), suffix


def _dead_lines(report: Report) -> list[str]:
    dead = [v for v in report.sites if v.dead_units]
    if not dead:
        return []
    n = sum(len(v.dead_units) for v in dead)
    lines = []
    found = _model_flags(report)
    if found is not None:
        path, flags, suffix = found
        p = Path(path)
        stem = str(p.with_name(p.stem if p.suffix else p.name))
        lines.append(
            f"dead: make the {n} dead units train again (recycled: output unchanged), then fine-tune: "
            f"actaudit rewrite {_q(path)} {flags} -o {_q(stem + '_revived' + suffix)}; "
            f"or remove them: actaudit prune {_q(path)} {flags} -o {_q(stem + '_pruned' + suffix)}"
        )
    samples = min(v.stats.samples for v in dead)
    need = math.ceil(3 / TARGET_RATE)
    more = (
        f"; for < {TARGET_RATE:.1%}, audit on ≥ {need} samples like the model's real inputs"
        if samples < need
        else ""
    )
    lines.append(
        f"coverage: a unit counted dead never fired on {samples} samples: its firing rate is "
        f"< {upper_bound_95(samples):.1%} with 95 % confidence (rule of three: < 3/N){more}"
    )
    return lines


def _saturation_lines(report: Report) -> list[str]:
    lines = []
    heads = [v for v in report.sites if expected_saturation(v)]
    if heads:
        names = ", ".join(v.info.name for v in heads[:3])
        lines.append(
            f"output head: {names} saturates as a confident output should; it matters only if the loss "
            "reads the saturated output (train on logits) or calibrated scores are needed"
        )
    hidden = [v for v in report.sites if v.saturated_units and not expected_saturation(v)]
    if hidden:
        capped = [v.info.name for v in hidden if v.can_die and v.saturated_high_units]
        fold = (
            f"; prune folds units stuck at a cap ({', '.join(capped[:3])}) into the next bias"
            if capped
            else ""
        )
        lines.append(
            "saturated: hidden units in a flat tail pass almost no gradient: check their inputs' scale "
            f"(normalisation, init, learning rate){fold}"
        )
    return lines


def next_steps(report: Report) -> list[str]:
    """The lines, in the order a user would act on them; empty when nothing calls for action."""
    lines = []
    if report.calibration.get("synthetic"):
        lines.append(
            "data: these verdicts are on random inputs; rerun with --calib and real data before acting"
        )
    lines += _dead_lines(report)
    lines += _saturation_lines(report)
    if report.uncovered:
        lines.append(
            f"uncovered: {len(report.uncovered)} activation sites were not audited; see the 'not covered' lines "
            "(--unit-axis SITE=AXIS settles an unknown unit axis)"
        )
    return lines
