"""``actaudit prune MODEL -o OUT``: cut dead units and fold constant ones, outputs verified unchanged.

Planning, surgery and the re-measured drift are :func:`actaudit.prune.core.prune`; this
module maps the flags onto :class:`~actaudit.prune.core.PruneOptions`.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from ..errors import EXIT_GATE
from .common import audit_options, check_files, config_file, publish, say
from .options import (
    defaulted,
    input_range_option,
    max_drift_option,
    output_format_option,
    writer_options,
    writer_outputs,
)


@click.command("prune")
@click.argument("model", type=click.Path(dir_okay=True))
@writer_options("pruned")
@max_drift_option(
    1e-5,
    "Budget for ‖y′−y‖/‖y‖ over all outputs of the calibration set; above 1e-5 nearly constant "
    "saturated tanh/sigmoid units may be folded too.",
)
@input_range_option(
    "Box of valid inputs (repeatable, per input with NAME=): units proven dead for every input "
    "in it by interval bounds are listed; '-inf,inf' gives the weights-only facts.",
)
@click.option(
    "--only-proven",
    is_flag=True,
    help="Remove only units proven dead for every input in --input-range (not merely dead on the data).",
)
@output_format_option(
    "For eager inputs (state_dict + --arch, pickled modules): TorchScript or torch.export. Default: from the -o extension.",
)
@defaulted(
    "--fresh-seed",
    int,
    1234,
    help="Seed of the fresh uniform batch (same shape and range as the calibration data) whose drift is reported.",
)
@writer_outputs(force="Overwrite an existing output; write even when the drift gate fails.")
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
    import os

    from ..edit.folder import names_folder, refuse_prune_folder_output
    from ..prune.core import PruneOptions
    from ..prune.core import prune as run_prune

    if kw["output"] is not None and os.path.isdir(kw["model"]) and names_folder(kw["output"]):
        refuse_prune_folder_output(kw["output"])
    check_files(kw, writes_model=True)  # before the run: an input is never overwritten, --force or not
    opts = PruneOptions(
        output=kw["output"],
        max_drift=kw["max_drift"],
        only_proven=kw["only_proven"],
        input_range=tuple(kw["input_range"]),
        output_format=kw["output_format"],
        fresh_seed=kw["fresh_seed"],
        force=kw["force"],
        audit=audit_options(kw),
    )
    config = config_file(kw["quiet"])
    report = run_prune(kw["model"], options=opts)
    if config:
        report.run["config_file"] = config
    publish(report, kw)
    if not report.passed:
        d = report.drift
        value = f"{d.rel_l2:.4g}" if d is not None else "?"
        say(f"actaudit: gate failed: relative drift {value} > --max-drift {opts.max_drift:g}")
        sys.exit(EXIT_GATE)
