"""``actaudit inspect MODEL``: the activation sites an audit would cover, and the model's inputs."""

from __future__ import annotations

from typing import Any

import click

from .common import check_files, config_file, echo_remarks, emit, load_kwargs
from .config import config_option
from .options import (
    FORMATS,
    debug_option,
    force_option,
    format_option,
    model_options,
    output_option,
    quiet_option,
    unit_axis_option,
    val_range,
)

__all__ = ["FORMATS", "inspect"]


@click.command("inspect")
@click.argument("model", type=click.Path(dir_okay=True))
@model_options
@click.option(
    "--input-shape",
    "input_shapes",
    multiple=True,
    metavar="[NAME=]DIMS[:DTYPE]",
    help="Shape (and dtype) of the synthetic probe input, e.g. 1x3x224x224 or input_ids=1x128:int64 "
    "(the leading dim is the batch axis).",
)
@click.option(
    "--val-range",
    metavar="LOW,HIGH",
    callback=val_range,
    help="Draw synthetic values uniformly from [LOW, HIGH] (integers for integer inputs: token ids), "
    "e.g. 0,30521. Default: standard normal floats, 0/1 integers.",
)
@unit_axis_option(
    "Override the unit axis of matching sites, as in audit, to check the override before a run."
)
@format_option
@output_option("Write the listing here (atomically).")
@force_option()
@quiet_option("No notes on stderr.")
@debug_option
@config_option
def inspect(**kw: Any) -> None:
    """List MODEL's activation sites (op, kind, unit axis, units) and inputs, without calibration data.

    Site names and order are those of `actaudit audit`: use them in --fail-on site
    globs and --unit-axis overrides before running an audit.

    \b
    Examples:
      actaudit inspect model.pt2
      actaudit inspect model.ts --input-shape 1x3x224x224
      actaudit inspect model.onnx --format json | jq '.sites[].name'
    """
    from ..inspection import inspect_model

    check_files(kw)
    config_file(kw["quiet"])
    ins = inspect_model(
        kw["model"],
        input_shapes=kw["input_shapes"],
        unit_axis=kw["unit_axis"],
        val_range=kw["val_range"],
        **load_kwargs(kw),
    )
    echo_remarks(kw, notes=ins.notes)
    emit(ins.render(kw["fmt"]), kw["output"], kw["force"])
