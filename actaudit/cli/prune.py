"""``actaudit prune``: cut dead units and fold constant ones, with the outputs verified unchanged.

A thin layer over :func:`actaudit.prune.core.prune`. stdout carries only the report
(unless ``--report FILE``); warnings go to stderr.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from ..errors import EXIT_GATE
from . import _emit, data_options, model_options, threshold_options

FORMATS = ("table", "json", "csv", "markdown")


@click.command()
@click.argument("model", type=click.Path(dir_okay=True))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False),
    help="Where to write the pruned model (atomically, after it is reloaded and re-measured).",
)
@model_options
@data_options
@threshold_options
@click.option(
    "--max-drift",
    type=click.FloatRange(0, min_open=True),
    default=1e-5,
    show_default=True,
    help="Budget for ‖y′−y‖/‖y‖ over all outputs of the calibration set; above 1e-5 nearly constant "
    "saturated tanh/sigmoid units may be folded too.",
)
@click.option(
    "--input-range",
    "input_range",
    multiple=True,
    metavar="[NAME=]LOW,HIGH",
    help="Box of valid inputs (repeatable, per input with NAME=): units proven dead for every input "
    "in it by interval bounds are listed; '-inf,inf' gives the weights-only facts.",
)
@click.option(
    "--only-proven",
    is_flag=True,
    help="Remove only units proven dead for every input in --input-range (not merely dead on the data).",
)
@click.option(
    "--output-format",
    type=click.Choice(["ts", "pt2"]),
    help="For eager inputs (state_dict + --arch, pickled modules): TorchScript or torch.export. Default: from the -o extension.",
)
@click.option(
    "--fresh-seed",
    type=int,
    default=1234,
    show_default=True,
    help="Seed of the fresh uniform batch (same shape and range as the calibration data) whose drift is reported.",
)
@click.option(
    "--force", is_flag=True, help="Overwrite an existing output; write even when the drift gate fails."
)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.option(
    "--report",
    type=click.Path(dir_okay=False),
    help="Write the report here instead of stdout (atomically, overwriting).",
)
@click.option("-q", "--quiet", is_flag=True, help="No warnings on stderr.")
@click.option("--debug", is_flag=True, help="Show tracebacks of internal errors.")
def prune(**kw: Any) -> None:
    """Remove dead units of MODEL and fold constant ones into the next layer's bias.

    A unit that outputs one value on every calibration sample (a dead ReLU: 0; a ReLU6
    stuck at 6) is cut from its producer (Conv/Gemm/MatMul, BatchNorm, bias) and from
    every consumer, its constant folded into the consumers' biases. Units whose removal
    cannot be exact (a residual Add, a model output, an op mixing units) are kept, and
    the report says why. The pruned file is reloaded, re-run and its drift re-measured
    before it is renamed to OUT. Exit 1 when the drift exceeds --max-drift.

    \b
    Examples:
      actaudit prune model.onnx -o small.onnx --calib batch.npy
      actaudit prune model.onnx -o small.onnx --calib batch.npy --input-range 0,1 --only-proven
      actaudit prune model.pt2 -o small.pt2 --calib images.npy --format json
      actaudit prune weights.pt --arch net.py:build -o small.ts --calib x.npy
    """
    from ..prune.core import PruneOptions
    from ..prune.core import prune as run_prune
    from ..rewrite.core import check_output
    from . import audit_options

    audit = audit_options(kw)
    opts = PruneOptions(
        output=kw["output"],
        max_drift=kw["max_drift"],
        only_proven=kw["only_proven"],
        input_range=tuple(kw["input_range"]),
        output_format=kw["output_format"],
        fresh_seed=kw["fresh_seed"],
        force=kw["force"],
        audit=audit,
    )
    check_output(kw["output"], kw["force"], kw["model"])
    if kw["report"]:
        check_output(kw["report"], True, kw["model"])
    report = run_prune(kw["model"], options=opts)
    if not kw["quiet"] and kw["fmt"] != "table":
        for w in report.warnings:
            click.echo(f"actaudit: warning: {w}", err=True)
    _emit(report.render(kw["fmt"]), kw["report"], True)
    out = report.output
    if out.get("written"):
        click.echo(f"actaudit: wrote {out['path']} [{out['format']}]", err=True)
    elif out.get("reason") and not kw["quiet"]:
        click.echo(f"actaudit: nothing written to {out['path']}: {out['reason']}", err=True)
    if not report.passed:
        d = report.drift
        value = f"{d.rel_l2:.4g}" if d is not None else "?"
        click.echo(
            f"actaudit: gate failed: relative drift {value} > --max-drift {opts.max_drift:g}", err=True
        )
        sys.exit(EXIT_GATE)
