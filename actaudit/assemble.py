"""An audit report assembled from a capture: verdicts, warnings about the data, gates, run facts."""

from __future__ import annotations

import contextlib
import os
import platform
from collections.abc import Sequence
from importlib import metadata
from typing import Protocol

from .backends.base import packages_of
from .data import DataSource
from .errors import CalibrationError
from .gates import Gate, coverage_result, evaluate
from .hints import FLOAT_CAST, RELU_FROM_OUTPUT
from .options import AuditOptions
from .report import Report
from .stats import Capture
from .verdicts import SiteVerdict, classify

MIN_SAMPLES_FOR_CONFIDENCE = 30


class ReportSubject(Protocol):
    """What a report says about its model: a loaded model, or a merged shard report's record of one."""

    path: str | None
    fmt: str
    sha256: str | None

    @property
    def backend(self) -> str: ...

    @property
    def notes(self) -> list[str]: ...


def model_section(m: ReportSubject) -> dict[str, object]:
    """The ``model`` section of every report: which file, in which format, with which hash."""
    return {"path": m.path, "format": m.fmt, "sha256": m.sha256}


_INFO_PREFIXES = ("weights from key", FLOAT_CAST, RELU_FROM_OUTPUT)


def is_info(note: str) -> bool:
    """A loader note that reports a choice the tool made for the user, not something to fix."""
    return note.startswith(_INFO_PREFIXES)


def build_report(
    loaded: ReportSubject,
    source: DataSource,
    cap: Capture,
    opts: AuditOptions,
    gates: list[Gate],
    timings: dict[str, float],
) -> Report:
    if cap.samples == 0:
        # A gate such as dead>0 would pass on no data at all: a CI bypass, not a result.
        raise CalibrationError(
            f"calibration data {source.description} gave 0 samples",
            hint="give data with at least one sample along axis 0",
        )
    verdicts = [classify(s.info, s.stats, opts.settings) for s in cap.sites]
    notes = [n for n in loaded.notes if is_info(n)]
    warnings = [n for n in loaded.notes if not is_info(n)] + list(cap.warnings)
    if source.synthetic:
        warnings.append(
            "calibration data is synthetic (random inputs): verdicts describe random inputs, not real data; "
            "pass --calib or --data-loader"
        )
    names = [u.name for u in cap.uncovered]
    cov_gate = coverage_result(gates, len(verdicts), names, opts.allow_uncovered)
    warnings += _run_warnings(source, cap, opts, verdicts)
    if cap.uncovered or (gates and not verdicts):
        warnings.append(coverage_line(len(verdicts), len(names), bool(gates), cov_gate is not None))
    calibration = {
        "source": source.description,
        "samples": cap.samples,
        "batches": cap.batches,
        "batch_size": opts.batch_size,
        "synthetic": source.synthetic,
    }
    if source.synthetic:
        calibration["seed"] = opts.seed
    report = Report(
        model=model_section(loaded),
        calibration=calibration,
        settings=opts.settings,
        sites=verdicts,
        uncovered=cap.uncovered,
        warnings=warnings,
        notes=notes,
        inputs=cap.inputs,
        per_unit=opts.per_unit,
    )
    report.gates = evaluate(gates, verdicts, report.summary(), report.warnings)
    if cov_gate is not None:
        report.gates.append(cov_gate)
    if cap.extras.get("ffn"):
        from .report.ffn import ffn_profile

        report.ffn = ffn_profile(verdicts, cap.extras["ffn"])
    report.run = {
        "timings_s": {k: round(v, 4) for k, v in timings.items()},
        "host": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "versions": _versions(packages_of(loaded.backend)),
    }
    return report


def _run_warnings(
    source: DataSource, cap: Capture, opts: AuditOptions, verdicts: list[SiteVerdict]
) -> list[str]:
    """Warnings about what the run saw: unused samples, too few samples, non-finite values, no site."""
    warnings: list[str] = []
    offered = source.total_samples
    if offered is not None and opts.samples is not None:
        offered = min(offered, opts.samples)
    if offered is not None and 0 < cap.samples < offered:
        warnings.append(
            f"{offered - cap.samples} of {offered} calibration samples were not used: the model takes "
            "batches of a fixed size and the remainder did not fill one"
        )
    if cap.samples < MIN_SAMPLES_FOR_CONFIDENCE:
        warnings.append(
            f"only {cap.samples} calibration samples: a unit that fires on up to "
            f"{100 * (1 - 0.05 ** (1 / max(cap.samples, 1))):.0f}% of inputs can still look dead"
        )
    nonfinite = [v.info.name for v in verdicts if int(v.stats.nonfinite.sum())]
    if nonfinite:
        warnings.append(
            "non-finite pre-activations (NaN/Inf) at "
            + ", ".join(nonfinite[:5])
            + ": verdicts there use finite values only"
        )
    if not verdicts:
        warnings.append("no activation call sites were found")
    return warnings


def coverage_line(sites: int, uncovered: int, gated: bool, gate_failed: bool) -> str:
    """How much of the model the audit saw, and what that means for the gates."""
    seen = f"audited {sites} of {sites + uncovered} activation sites found"
    if gate_failed:
        return seen + ": the coverage gate fails (pass --allow-uncovered to gate the audited sites only)"
    if gated:
        return seen + ": the gates judged the audited sites only"
    return seen + ": the verdicts say nothing about the rest"


def _versions(names: Sequence[str]) -> dict[str, str]:
    out = {}
    for n in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[n] = metadata.version(n)
    return out
