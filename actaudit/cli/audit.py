"""``actaudit audit MODEL``: run calibration data through the model and report dead and saturated units."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..options import AuditOptions
    from ..report.audit import Report
    from ..report.baseline import Comparison

import click

from .common import (
    audit_options,
    check_files,
    config_file,
    echo_remarks,
    emit,
    exit_on_failed_gates,
    say,
    use_color,
    write_file,
)
from .config import config_option
from .options import (
    Finite,
    data_options,
    debug_option,
    defaulted,
    fail_on_option,
    force_option,
    format_option,
    group,
    html_option,
    input_range_option,
    model_options,
    output_option,
    per_unit_option,
    quiet_option,
    threshold_options,
)

# --against BASELINE.json and its limits.
baseline_options = group(
    click.option(
        "--against",
        type=click.Path(dir_okay=False),
        metavar="BASELINE.json",
        help="Compare with a previous --format json report; exit 1 on regressions (newly dead units, "
        "sites whose dead fraction rose by more than --max-dead-fraction-rise).",
    ),
    defaulted(
        "--max-dead-fraction-rise",
        Finite(0, 1),
        0.0,
        help="With --against: allowed rise of a site's dead fraction (0.05 = 5 points).",
    ),
    defaulted(
        "--max-new-dead", click.IntRange(min=0), 0, help="With --against: allowed number of newly dead units."
    ),
    click.option(
        "--allow-renamed-sites",
        is_flag=True,
        help="With --against: when no site name matches the baseline, pair sites by position (same kind and "
        "unit count) instead of refusing the comparison as not comparable.",
    ),
)

# Extra outputs and how the run is split.
extra_options = group(
    click.option(
        "--relu-from-output",
        is_flag=True,
        help="ONNX: measure ReLU sites from their output only, so onnxruntime keeps its fused Conv/Gemm+ReLU "
        "kernels. Verdicts and fire rates are unchanged; pre-activation minima, negative moments and "
        "maxima <= 0 of those sites are not measured (null in JSON).",
    ),
    html_option("Also write a self-contained HTML report (charts, no network resources) to FILE."),
    click.option(
        "--junit",
        type=click.Path(dir_okay=False),
        metavar="FILE",
        help="Also write the gates and baseline comparisons as JUnit XML (one testcase each) for CI test reports.",
    ),
    click.option(
        "--wide",
        is_flag=True,
        help="Print the full table even when it is wider than the terminal (files and pipes always get it).",
    ),
    input_range_option(
        "Box of valid inputs (repeatable; NAME= for one input): interval bounds mark the units proven dead "
        "for every input in it (proven_dead_units in JSON, a column in the table); '-inf,inf' gives weights-only facts."
    ),
    click.option(
        "--shard",
        metavar="K/N",
        help="Audit only the K-th of N parts of the data (batch i goes to part i mod N) and write a JSON "
        "report with exact counters; combine the N reports with 'actaudit merge'.",
    ),
    defaulted(
        "--dist-timeout",
        Finite(min=1),
        1800,
        help="Under torchrun: how long a rank waits for the others at each collective.",
        metavar="SECONDS",
    ),
)


@click.command("audit")
@click.argument("model", type=click.Path(dir_okay=True, readable=False))
@model_options
@data_options
@threshold_options
@fail_on_option(
    "Exit 1 when a gate trips, e.g. 'dead>0', 'dead-fraction>0.2', 'encoder.*:saturated-fraction>0.1'. "
    "Metrics: dead, dead-fraction, saturated, saturated-fraction, rarely-firing, rarely-firing-fraction, nonfinite, uncovered."
)
@click.option(
    "--allow-uncovered",
    is_flag=True,
    help="Let --fail-on gates pass although the audit found no site or left activations uncovered "
    "(by default a 'coverage' gate then fails, exit 1).",
)
@baseline_options
@extra_options
@format_option
@output_option()
@force_option()
@per_unit_option()
@quiet_option()
@debug_option
@config_option
def audit(**kw: Any) -> None:
    """Run calibration data through MODEL and report dead and saturated units per call site.

    \b
    Examples:
      actaudit audit model.ts --calib images.npy
      actaudit audit model.onnx --input-shape input=1x3x224x224 --format json
      actaudit audit ckpt.pt --arch models.py:resnet --calib val.npz --fail-on 'dead>0'
    """
    from ..api import audit as run_audit
    from ..progress import progress_for

    opts = _options(kw)
    main_rank = opts.dist is None or opts.dist.is_main
    if not main_rank:
        # Every rank runs its share; rank 0 alone writes and decides the exit code.
        kw.update(quiet=True, output=None, html=None, junit=None, against=None)
    check_files(kw)
    config = config_file(kw["quiet"])
    if kw["per_unit"] and kw["fmt"] != "json" and not kw["quiet"]:
        say(
            f"actaudit: warning: --per-unit adds per-unit vectors to JSON only; --format {kw['fmt']} ignores it "
            "(use --format json, or --html for per-site unit indices)",
        )
    baseline = None
    if kw["against"]:
        from ..report.baseline import load_baseline

        baseline = load_baseline(kw["against"])  # fail before the slow run
    opts.progress = progress_for(None, quiet=kw["quiet"])
    with opts.progress:
        report = run_audit(kw["model"], options=opts)
    if config:
        report.run["config_file"] = config
    report.invocation = {k: kw.get(k) for k in ("model", "arch", "calib", "data_loader")}
    if main_rank:
        _finish(report, baseline, kw)


def _options(kw: dict[str, Any]) -> AuditOptions:
    """AuditOptions from the flags, with torchrun's rank and the shard checked."""
    from ..distributed import from_env

    opts = audit_options(kw)
    opts.fail_on = kw["fail_on"]
    opts.allow_uncovered = kw["allow_uncovered"]
    opts.input_range = kw["input_range"]
    opts.per_unit = kw["per_unit"]
    opts.relu_from_output = kw["relu_from_output"]
    opts.dist = from_env(kw["dist_timeout"])
    if opts.dist is not None and opts.threads is None:
        # torchrun gives each rank OMP_NUM_THREADS (1 by default); onnxruntime does not read it.
        omp = os.environ.get("OMP_NUM_THREADS", "")
        opts.threads = int(omp) if omp.isdigit() and int(omp) > 0 else None
    if kw["shard"]:
        _shard_checks(kw, opts)
    return opts


def _shard_checks(kw: dict[str, Any], opts: AuditOptions) -> None:
    from ..errors import InputError
    from ..shard import parse_shard

    opts.shard = parse_shard(kw["shard"])
    if opts.dist is not None:
        raise InputError("--shard and torchrun split the data twice", hint="use one of them")
    if kw["fmt"] != "json":
        raise InputError("--shard writes its counters in JSON only", hint="add --format json")
    for flag in ("against", "html"):
        if kw[flag]:
            raise InputError(
                f"--{flag} applies to the whole audit, not to one shard",
                hint=f"give --{flag} to actaudit merge" if flag == "html" else "compare the merged report",
            )


def _compare(report: Report, baseline: dict[str, Any], kw: dict[str, Any]) -> Comparison:
    """The comparison with ``--against``; its gates join the report's."""
    from ..report.baseline import compare

    comparison = compare(
        report.to_dict(),
        baseline,
        max_dead_fraction_rise=kw["max_dead_fraction_rise"],
        max_new_dead=kw["max_new_dead"],
        baseline_path=kw["against"],
        allow_renamed=kw["allow_renamed_sites"],
    )
    report.gates += comparison.gate_results
    report.baseline = comparison.to_dict()
    if not kw["quiet"]:
        say(comparison.render(), nl=False)
    return comparison


def _finish(report: Report, baseline: dict[str, Any] | None, kw: dict[str, Any]) -> None:
    """Compare, print, write the extra files, and exit 1 when a gate failed."""
    from ..report.terminal import table_width

    comparison = _compare(report, baseline, kw) if baseline is not None else None
    echo_remarks(kw, report.notes, report.warnings)
    width = table_width(kw["wide"], bool(kw["output"]))
    emit(
        report.render(kw["fmt"], color=use_color(kw["output"]), width=width),
        kw["output"],
        kw["force"],
    )
    if kw["html"]:
        from ..report.html import render_html

        write_file("html", render_html(report, comparison), kw)
    if kw["junit"]:
        from ..junit import render_junit

        write_file("junit", render_junit(report), kw)
    if report.gates:
        from ..junit import ci_summary

        for line in ci_summary(report):  # names every failed gate: the gate is said once on stderr
            say(line)
    exit_on_failed_gates(report, named=bool(report.gates))
